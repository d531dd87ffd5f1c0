// Package docs holds the reference documentation (one topic a file; the
// README links each) and the tests that hold it to the code: the flags
// table of configuration.md against every binary's -h; every relative
// link of the README and of these files against the files and headings it
// names; every file of docs/ linked from the README; every source file
// they name present. It has no code of its own.
package docs
