package client

// client.gen.go is generated from api/openapi.yaml, the document the API
// serves at /openapi.yaml, with the settings in oapi-codegen.yaml;
// TestClientIsGenerated fails when it is stale.
//go:generate go tool oapi-codegen -config oapi-codegen.yaml -o client.gen.go ../openapi.yaml
