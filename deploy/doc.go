// Package deploy holds the deployment files (deploy/kubernetes, deploy/nats,
// and the repository's Dockerfile and docker-compose.yaml) and the tests
// that parse and check them; it has no code of its own.
package deploy
