package bff

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestParseRPC: what the gateway reads of a JSON-RPC message, and what it
// refuses; members by exact name, the last duplicate winning, as a Node
// MCP server reads them.
func TestParseRPC(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, body, method, mname string
		want                      rpcCall
		fault                     string // part of the refusal; "" for none
	}{
		{name: "tool call", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}`,
			want: rpcCall{ID: json.RawMessage(`1`), Request: true, Method: "tools/call", Name: "search"}},
		{name: "resource read", body: `{"jsonrpc":"2.0","id":"x","method":"resources/read","params":{"uri":"file:///a"}}`,
			want: rpcCall{ID: json.RawMessage(`"x"`), Request: true, Method: "resources/read", Name: "file:///a"}},
		{name: "notification", body: `{"jsonrpc":"2.0","method":"notifications/initialized"}`,
			want: rpcCall{Request: true, Method: "notifications/initialized"}},
		{name: "response", body: `{"jsonrpc":"2.0","id":7,"result":{}}`, want: rpcCall{ID: json.RawMessage(`7`)}},
		{name: "case variants are other members", body: `{"id":1,"method":"tools/call","params":{"name":"delete_repo"},"Params":{"name":"search"},"METHOD":"ping"}`,
			want: rpcCall{ID: json.RawMessage(`1`), Request: true, Method: "tools/call", Name: "delete_repo"}},
		{name: "last duplicate wins", body: `{"id":1,"method":"tools/call","params":{"name":"search","name":"delete_repo"}}`,
			want: rpcCall{ID: json.RawMessage(`1`), Request: true, Method: "tools/call", Name: "delete_repo"}},
		{name: "escaped name", body: `{"id":1,"method":"tools/call","params":{"name":"\u0064elete_repo"}}`,
			want: rpcCall{ID: json.RawMessage(`1`), Request: true, Method: "tools/call", Name: "delete_repo"}},
		{name: "headers agree", body: `{"id":1,"method":"tools/call","params":{"name":"search"}}`, method: "tools/call", mname: "search",
			want: rpcCall{ID: json.RawMessage(`1`), Request: true, Method: "tools/call", Name: "search"}},
		{name: "base64 name header", body: `{"id":1,"method":"tools/call","params":{"name":"tööl"}}`, method: "tools/call", mname: "=?base64?dMO2w7Zs?=",
			want: rpcCall{ID: json.RawMessage(`1`), Request: true, Method: "tools/call", Name: "tööl"}},
		{name: "method header differs", body: `{"id":1,"method":"tools/call","params":{"name":"search"}}`, method: "tools/list", fault: "Mcp-Method"},
		{name: "name header differs", body: `{"id":1,"method":"tools/call","params":{"name":"delete_repo"}}`, mname: "search", fault: "Mcp-Name"},
		{name: "bad base64 header", body: `{"id":1,"method":"tools/call","params":{"name":"x"}}`, mname: "=?base64?***?=", fault: "Mcp-Name"},
		{name: "method header on a response", body: `{"id":1,"result":{}}`, method: "tools/call", fault: "without a method"},
		{name: "batch", body: ` [{"id":1,"method":"ping"}]`, fault: "batches"},
		{name: "not json", body: `{"id":`, fault: "not a JSON-RPC message"},
		{name: "not an object", body: `"tools/call"`, fault: "not a JSON-RPC message"},
		{name: "null", body: `null`, fault: "not a JSON-RPC message"},
		{name: "method not a string", body: `{"id":1,"method":5}`, fault: "not a string"},
		{name: "method null", body: `{"id":1,"method":null}`, fault: "not a string"},
		{name: "id an object", body: `{"id":{"a":1},"method":"ping"}`, fault: "id"},
		{name: "tool call without params", body: `{"id":1,"method":"tools/call"}`, fault: "params"},
		{name: "tool name not a string", body: `{"id":1,"method":"tools/call","params":{"name":["a"]}}`, fault: "params.name"},
		{name: "tool name missing", body: `{"id":1,"method":"tools/call","params":{}}`, fault: "params.name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, f := parseRPC([]byte(tc.body), tc.method, tc.mname)
			switch {
			case tc.fault != "":
				if f == nil || !strings.Contains(f.Msg, tc.fault) {
					t.Fatalf("fault %+v, want one naming %q", f, tc.fault)
				}
			case f != nil:
				t.Fatalf("refused: %+v", f)
			case string(got.ID) != string(tc.want.ID) || got.Request != tc.want.Request || got.Method != tc.want.Method || got.Name != tc.want.Name:
				t.Fatalf("got %+v (id %s), want %+v (id %s)", got, got.ID, tc.want, tc.want.ID)
			}
		})
	}
}

// TestMCPRules: deny before allow, globs, the scopes a tool needs.
func TestMCPRules(t *testing.T) {
	t.Parallel()
	p, err := compileMCP(MCPConfig{Tools: MCPToolRules{Allow: []string{"search*", "admin_*", "delete_*"}, Deny: []string{"delete_*"},
		Scopes: map[string][]string{"admin_*": {"mcp:admin"}, "*": {"mcp:tools"}}}})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"search": true, "search_docs": true, "admin_reset": true, "delete_repo": false, "other": false} {
		if got, _ := p.tools.allows(name); got != want {
			t.Errorf("tool %s allowed %v, want %v", name, got, want)
		}
	}
	if got := strings.Join(p.toolScopes("admin_reset"), " "); got != "mcp:tools mcp:admin" {
		t.Errorf("admin_reset needs %q", got)
	}
	if got := strings.Join(p.allScopes(), " "); got != "mcp:tools mcp:admin" {
		t.Errorf("all scopes %q", got)
	}
	if _, err := compileMCP(MCPConfig{Tools: MCPToolRules{Deny: []string{"[a-"}}}); err == nil {
		t.Error("a bad glob compiled")
	}
}

// FuzzParseRPC: no input panics; a message accepted with a name header
// names exactly what the header says.
func FuzzParseRPC(f *testing.F) {
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}`), "tools/call", "search")
	f.Add([]byte(`[{"id":1}]`), "", "")
	f.Add([]byte(`{"id":null,"method":"resources/read","params":{"uri":"x"}}`), "", "=?base64?eA==?=")
	f.Add([]byte(`{"id":1,"method":"tools/call","params":{"name":"a"},"Params":{"name":"b"}}`), "", "")
	f.Fuzz(func(t *testing.T, body []byte, method, name string) {
		call, fault := parseRPC(body, method, name)
		if fault != nil {
			if fault.Code == 0 || fault.Status != 400 {
				t.Fatalf("fault %+v", fault)
			}
			return
		}
		if method != "" && call.Method != method {
			t.Fatalf("accepted method %q under header %q", call.Method, method)
		}
		if name != "" {
			if v, ok := headerValue(name); !ok || v != call.Name {
				t.Fatalf("accepted name %q under header %q", call.Name, name)
			}
		}
		if call.ID != nil && !json.Valid(call.ID) {
			t.Fatalf("id %q is not JSON", call.ID)
		}
		_ = utf8.ValidString(call.Name)
	})
}
