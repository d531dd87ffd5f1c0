package api_test

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/alauda/costmeter/api"
)

// The published contract, the platform's own API page verbatim
// (testdata/contract.txt), parsed independently of openapi.yaml: every
// parameter, enum, default, schema and field it names must be in our
// description with the same type, and --currency must accept exactly its
// currencies. Additions on top (format, cost, the watch routes) are ours.

type contractParam struct {
	name, in, typ string
	required      bool
	enum          []string
	def           string
}

type contractField struct{ name, typ string }

type contractPath struct {
	path   string
	params []contractParam
}

type contract struct {
	paths   []contractPath
	schemas map[string][]contractField
	enums   map[string][]string // schema.field -> enum
}

var (
	paramLine   = regexp.MustCompile(`^• (\w+) \(in (query|path)\): (\w+)( required)?$`)
	fieldLine   = regexp.MustCompile(`^• (\w+): (\S+)$`)
	supportText = regexp.MustCompile(`support: ([A-Za-z_]+(?:\|[A-Za-z_]+)+)`)
	defaultText = regexp.MustCompile(`default is (\w+)`)
	schemaLine  = regexp.MustCompile(`^[A-Z]\w+$`)
)

func parseContract(t *testing.T) contract {
	t.Helper()
	f, err := os.Open("testdata/contract.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := contract{schemas: map[string][]contractField{}, enums: map[string][]string{}}
	var (
		section, schema string
		param           *contractParam
		field           string
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
			continue
		case strings.HasPrefix(line, "/platform/"):
			c.paths = append(c.paths, contractPath{path: line})
			section, schema, param = "", "", nil
			continue
		case line == "Parameters":
			section = "params"
			continue
		case line == "Response":
			section, param = "response", nil
			continue
		}
		if section == "params" {
			if m := paramLine.FindStringSubmatch(line); m != nil {
				p := &c.paths[len(c.paths)-1]
				p.params = append(p.params, contractParam{name: m[1], in: m[2], typ: m[3], required: m[4] != ""})
				param = &p.params[len(p.params)-1]
				continue
			}
			if param != nil {
				if m := supportText.FindStringSubmatch(line); m != nil {
					param.enum = strings.Split(m[1], "|")
				}
				if m := defaultText.FindStringSubmatch(line); m != nil {
					param.def = m[1]
				}
			}
			continue
		}
		if section != "response" {
			continue
		}
		if schemaLine.MatchString(line) && indent(sc.Text()) <= 4 { // descriptions are indented deeper
			schema, field = line, ""
			if _, seen := c.schemas[schema]; seen {
				schema = "" // the second route repeats the schemas
			}
			continue
		}
		if schema == "" {
			continue
		}
		if m := fieldLine.FindStringSubmatch(line); m != nil {
			c.schemas[schema] = append(c.schemas[schema], contractField{name: m[1], typ: m[2]})
			field = m[1]
			continue
		}
		if m := supportText.FindStringSubmatch(line); m != nil && field != "" {
			c.enums[schema+"."+field] = strings.Split(m[1], "|")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(c.paths) != 2 || len(c.schemas) != 3 || len(c.paths[0].params) != 9 || len(c.paths[1].params) != 10 ||
		len(c.schemas["CostUsageResponse"]) != 4 || len(c.schemas["CostUsageItem"]) != 9 || len(c.schemas["Status"]) != 7 {
		t.Fatalf("contract parsed badly: %d paths, %d schemas", len(c.paths), len(c.schemas))
	}
	return c
}

func indent(s string) int { return len(s) - len(strings.TrimLeft(s, " ")) }

func loadSpec(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPISpec())
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func schemaType(s *openapi3.Schema) string {
	if s.Type == nil || len(*s.Type) != 1 {
		return ""
	}
	return (*s.Type)[0]
}

// beyondContract are the values the API accepts beyond the contract's,
// per parameter: the group kinds (docs/api.md).
var beyondContract = map[string][]string{"kind": {"group", "group_all"}}

func TestContractParameters(t *testing.T) {
	c := parseContract(t)
	doc := loadSpec(t)
	for _, cp := range c.paths {
		t.Run(cp.path, func(t *testing.T) {
			item := doc.Paths.Value(cp.path)
			if item == nil || item.Get == nil {
				t.Fatalf("openapi.yaml has no GET %s", cp.path)
			}
			for _, want := range cp.params {
				got := item.Get.Parameters.GetByInAndName(want.in, want.name)
				if got == nil {
					t.Errorf("%s: parameter %s (in %s) missing", cp.path, want.name, want.in)
					continue
				}
				s := got.Schema.Value
				if typ := schemaType(s); typ != want.typ {
					t.Errorf("%s: type %q, contract %q", want.name, typ, want.typ)
				}
				if got.Required != want.required {
					t.Errorf("%s: required %v, contract %v", want.name, got.Required, want.required)
				}
				if want.enum != nil {
					var enum []string
					for _, v := range s.Enum {
						enum = append(enum, v.(string))
					}
					// The contract's values, in its order, then the ones
					// documented as beyond it.
					if wantAll := append(slices.Clone(want.enum), beyondContract[want.name]...); !slices.Equal(enum, wantAll) {
						t.Errorf("%s: enum %v, contract %v and beyond it %v", want.name, enum, want.enum, beyondContract[want.name])
					}
				}
				if want.def != "" {
					if got := fmt.Sprint(s.Default); got != want.def {
						t.Errorf("%s: default %q, contract %q", want.name, got, want.def)
					}
				}
			}
			if resp := item.Get.Responses.Status(200); resp == nil || resp.Value.Content.Get("application/json").Schema.Ref != "#/components/schemas/CostUsageResponse" {
				t.Errorf("%s: 200 is not a CostUsageResponse", cp.path)
			}
		})
	}
}

func TestContractSchemas(t *testing.T) {
	c := parseContract(t)
	doc := loadSpec(t)
	for name, fields := range c.schemas {
		t.Run(name, func(t *testing.T) {
			ref := doc.Components.Schemas[name]
			if ref == nil {
				t.Fatalf("openapi.yaml has no schema %s", name)
			}
			for _, f := range fields {
				p := ref.Value.Properties[f.name]
				if p == nil {
					t.Errorf("%s.%s missing", name, f.name)
					continue
				}
				if elem, ok := strings.CutPrefix(f.typ, "[]"); ok {
					if schemaType(p.Value) != "array" || p.Value.Items.Ref != "#/components/schemas/"+elem {
						t.Errorf("%s.%s is not an array of %s", name, f.name, elem)
					}
					continue
				}
				if typ := schemaType(p.Value); typ != f.typ {
					t.Errorf("%s.%s: type %q, contract %q", name, f.name, typ, f.typ)
				}
				if want := c.enums[name+"."+f.name]; want != nil {
					var enum []string
					for _, v := range p.Value.Enum {
						enum = append(enum, v.(string))
					}
					if !slices.Equal(enum, want) {
						t.Errorf("%s.%s: enum %v, contract %v", name, f.name, enum, want)
					}
				}
			}
		})
	}
}

func TestContractCurrencies(t *testing.T) {
	c := parseContract(t)
	want := c.enums["CostUsageItem.currency"]
	if len(want) != 15 {
		t.Fatalf("contract currencies: %v", want)
	}
	if !slices.Equal(api.Currencies, want) {
		t.Errorf("api.Currencies = %v, contract %v", api.Currencies, want)
	}
	for _, cur := range want {
		cfg := api.DefaultConfig()
		cfg.Currency = cur
		if err := cfg.Validate(); err != nil {
			t.Errorf("--currency %s: %v", cur, err)
		}
	}
	for _, cur := range []string{"TWD", "KRW", "BRL", "cny", ""} {
		cfg := api.DefaultConfig()
		cfg.Currency = cur
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--currency") {
			t.Errorf("--currency %q accepted (err %v)", cur, err)
		}
	}
}
