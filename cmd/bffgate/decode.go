package main

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// KeyError is a configuration error at one key, in the user's words: the
// YAML key path (gateway.session.store), where the value came from (the
// file and line, or the environment variable), and what is wrong.
type KeyError struct {
	// Key is the YAML key path: gateway.routes[0].prefix.
	Key string
	// Where is "bffgate.yaml line 4" or "BFFGATE_GATEWAY_LISTEN"; empty
	// for a default or a value derived from other keys.
	Where string
	// Msg says what is wrong and what is allowed.
	Msg string
}

func (e *KeyError) Error() string {
	if e.Key == "" {
		return e.Where + ": " + e.Msg
	}
	if e.Where == "" {
		return e.Key + ": " + e.Msg
	}
	return e.Key + " (" + e.Where + "): " + e.Msg
}

// source remembers where each value of a configuration came from, so that
// an error found after decoding (by cmd's or a package's validation) can
// still name the file and line.
type source struct {
	file string     // as given to --config; empty: no file
	root *yaml.Node // the file's document node, nil without a file
	env  map[string]bool
}

// locate fills e.Where from s: the environment variable when one set the
// key (or the list holding it), else the file's line.
func (s *source) locate(e *KeyError) {
	if e.Where != "" || s == nil {
		return
	}
	// The longest key prefix a variable set: BFFGATE_GATEWAY_ROUTES sets
	// every gateway.routes[i].* at once.
	p := e.Key
	for {
		if s.env[envName(stripIndexes(p))] {
			e.Where = envName(stripIndexes(p))
			return
		}
		i := strings.LastIndexAny(p, ".[")
		if i <= 0 {
			break
		}
		p = p[:i]
	}
	if n := findNode(s.root, e.Key); n != nil {
		e.Where = fmt.Sprintf("%s line %d", s.file, n.Line)
		return
	}
	if from, ok := derivedFrom[e.Key]; ok {
		e.Msg += fmt.Sprintf(" (made from %s, as %s is not set: set it, or fix %s)", from, e.Key, from)
	}
}

// derivedFrom names the key a default is made from (fill), so that an
// error in a value the user never wrote points at the one they did.
var derivedFrom = map[string]string{
	"gateway.public_url":          "gateway.listen",
	"issuer.url":                  "issuer.listen",
	"gateway.provider.issuer_url": "issuer.url",
}

// locateAll fills Where in every KeyError err joins, and drops the error
// of a default made from a key that has an error itself (a bad
// gateway.listen makes a bad gateway.public_url: one message is enough).
func (s *source) locateAll(err error) error {
	if err == nil {
		return nil
	}
	all := flatten(err)
	failed := map[string]bool{}
	for _, e := range all {
		var ke *KeyError
		if errors.As(e, &ke) {
			failed[ke.Key] = true
		}
	}
	var out []error
	for _, e := range all {
		var ke *KeyError
		if errors.As(e, &ke) {
			s.locate(ke)
			if from, ok := derivedFrom[ke.Key]; ok && failed[from] && ke.Where == "" {
				continue
			}
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

// flatten lists the errors a (possibly nested) errors.Join holds.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

func stripIndexes(p string) string {
	var b strings.Builder
	depth := 0
	for _, r := range p {
		switch {
		case r == '[':
			depth++
		case r == ']':
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func envName(key string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// findNode returns the value node at a key path in the document, or nil.
func findNode(root *yaml.Node, path string) *yaml.Node {
	if root == nil {
		return nil
	}
	n := root
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		n = n.Content[0]
	}
	for path != "" {
		n = deref(n)
		if n == nil {
			return nil
		}
		if path[0] == '[' {
			end := strings.IndexByte(path, ']')
			i, err := strconv.Atoi(path[1:max(end, 1)])
			if end < 0 || err != nil || n.Kind != yaml.SequenceNode || i < 0 || i >= len(n.Content) {
				return nil
			}
			n, path = n.Content[i], strings.TrimPrefix(path[end+1:], ".")
			continue
		}
		end := strings.IndexAny(path, ".[")
		if end < 0 {
			end = len(path)
		}
		key := path[:end]
		path = strings.TrimPrefix(path[end:], ".")
		if n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				next = n.Content[i+1]
			}
		}
		if next == nil {
			return nil
		}
		n = next
	}
	return n
}

// deref follows an alias (*name) to its anchored node.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 16; i++ {
		n = n.Alias
	}
	if n != nil && n.Kind == yaml.AliasNode {
		return nil
	}
	return n
}

// field is one configuration key of a struct: its YAML name and where it
// sits (through inline structs).
type field struct {
	name  string
	index []int
}

// keysOf lists the YAML keys of a struct type: its fields' yaml tags,
// those of ",inline" structs included; `yaml:"-"` and untagged fields are
// not keys (runtime pieces such as a Logger or an HTTP client).
func keysOf(t reflect.Type) []field {
	var out []field
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		tag, opts, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if tag == "-" || !sf.IsExported() {
			continue
		}
		if opts == "inline" && sf.Type.Kind() == reflect.Struct {
			for _, f := range keysOf(sf.Type) {
				out = append(out, field{f.name, append([]int{i}, f.index...)})
			}
			continue
		}
		if tag == "" {
			continue
		}
		out = append(out, field{tag, []int{i}})
	}
	return out
}

var durationType = reflect.TypeOf(time.Duration(0))

// walked reports whether decode goes into t key by key (a struct of
// configuration keys) rather than decoding it as one value.
func walked(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && t != reflect.TypeOf(Duration(0)) && len(keysOf(t)) > 0
}

// decoder decodes YAML nodes into configuration values, collecting a
// KeyError for each key it cannot take (unknown, wrong type, set twice)
// instead of stopping at the first, as yaml.v3's KnownFields does with Go
// type names ("field sesion not found in type main.Gateway").
type decoder struct {
	where func(n *yaml.Node) string
	errs  []error
}

func (d *decoder) fail(n *yaml.Node, key, format string, args ...any) {
	d.errs = append(d.errs, &KeyError{Key: key, Where: d.where(n), Msg: fmt.Sprintf(format, args...)})
}

// maxDepth bounds the nesting decode follows (aliases can nest deeply).
const maxDepth = 32

func (d *decoder) decode(n *yaml.Node, v reflect.Value, key string, depth int) {
	if depth > maxDepth {
		d.fail(n, key, "nested too deeply")
		return
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return
		}
		n = n.Content[0]
	}
	if n.Kind == 0 {
		return // an empty file, or one with only comments: every default
	}
	orig := n
	if n = deref(n); n == nil {
		d.fail(orig, key, "an alias that names no value")
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "key:" with no value keeps the default
	}
	t := v.Type()
	switch {
	case walked(t):
		d.mapping(n, v, key, depth)
	case t.Kind() == reflect.Slice && walked(t.Elem()):
		if n.Kind != yaml.SequenceNode {
			d.fail(n, key, "want a list (- key: value entries), not %s", describeFor(t.Elem(), n))
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.decode(c, s.Index(i), fmt.Sprintf("%s[%d]", key, i), depth+1)
		}
		v.Set(s)
	case t == durationType || t == reflect.TypeOf(Duration(0)):
		dur, err := parseDuration(n)
		if err != nil {
			d.fail(n, key, "%v", err)
			return
		}
		v.SetInt(int64(dur))
	default:
		p := reflect.New(t)
		if err := n.Decode(p.Interface()); err != nil {
			d.fail(n, key, "%s", typeWant(t, n))
			return
		}
		v.Set(p.Elem())
	}
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, key string, depth int) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, key, "want a mapping of keys (such as %s), not %s", sampleKeys(v.Type()), describeFor(v.Type(), n))
		return
	}
	fields := keysOf(v.Type())
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		name := k.Value
		sub := name
		if key != "" {
			sub = key + "." + name
		}
		if k.Kind != yaml.ScalarNode {
			d.fail(k, key, "a key must be a plain name, not %s", describe(k))
			continue
		}
		if line, ok := seen[name]; ok {
			d.fail(k, sub, "is set twice (first on line %d); keep one", line)
			continue
		}
		seen[name] = k.Line
		i := slices.IndexFunc(fields, func(f field) bool { return f.name == name })
		if i < 0 {
			d.fail(k, sub, "%s", unknownKey(name, v.Type()))
			continue
		}
		d.decode(val, v.FieldByIndex(fields[i].index), sub, depth+1)
	}
}

// unknownKey says a key of the struct type t is unknown and suggests the
// nearest known one, or the section one level down that has a key of that
// name (gateway.dev_url: did you mean spa.dev_url?).
func unknownKey(name string, t reflect.Type) string {
	fields := keysOf(t)
	best, bestD := "", -1
	for _, f := range fields {
		if d := levenshtein(strings.ToLower(name), f.name); bestD < 0 || d < bestD {
			best, bestD = f.name, d
		}
	}
	// Within a third of the key's length: "sesion" finds session, "url"
	// does not find "dir".
	if bestD >= 0 && bestD <= max(1, len(name)/3) {
		return "unknown key; did you mean " + best + "?"
	}
	for _, f := range fields {
		if ft := t.FieldByIndex(f.index).Type; walked(ft) {
			for _, sub := range keysOf(ft) {
				if sub.name == strings.ToLower(name) {
					return "unknown key here; did you mean " + f.name + "." + sub.name + "?"
				}
			}
		}
	}
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	return "unknown key; the keys here are " + strings.Join(names, ", ")
}

// levenshtein is the edit distance between two keys (insertions,
// deletions, substitutions). Written here rather than imported: it is a
// dozen lines over the few dozen keys of one level, and not worth a
// dependency (STYLE: no dependency without need).
func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func parseDuration(n *yaml.Node) (time.Duration, error) {
	if n.Kind != yaml.ScalarNode {
		return 0, fmt.Errorf("want a duration such as \"30s\" or \"5m\", not %s", describe(n))
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		if _, nerr := strconv.ParseFloat(n.Value, 64); nerr == nil {
			return 0, fmt.Errorf("%s has no unit: want a Go duration such as \"30s\", \"5m\" or \"12h\"", n.Value)
		}
		return 0, fmt.Errorf("%q is not a duration: want a Go duration such as \"30s\", \"5m\" or \"12h\"", n.Value)
	}
	return v, nil
}

// typeWant says, in YAML words, what a key of type t takes.
func typeWant(t reflect.Type, n *yaml.Node) string {
	got := describe(n)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Bool:
		return "want true or false, not " + got
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "want a whole number, not " + got
	case reflect.String:
		return "want a text value (quote it if it looks like something else), not " + got
	case reflect.Slice:
		return "want a list such as [a, b], not " + got
	case reflect.Map:
		return "want a mapping such as {name: value}, not " + got
	default:
		return "cannot take " + got
	}
}

// describe names a node's value for an error: a quoted scalar, a list, a
// mapping. Scalars are clipped: a long value is likely a pasted secret.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.ScalarNode:
		v := n.Value
		if len(v) > 40 {
			v = v[:37] + "..."
		}
		return strconv.Quote(v)
	default:
		return "this value"
	}
}

// secretKeys are the keys whose values are secrets.
var secretKeys = map[string]bool{"secret": true, "client_secret": true, "password_hash": true,
	"sentinel_password": true, "hash": true, "block": true, "url": true}

// describeFor is describe for a value wanted as a section of type t (or a
// list of them): a scalar given where a section holding a secret belongs
// is likely that secret, pasted one level too high (cookie_keys: [KEY],
// clients: [SECRET]), and is not shown.
func describeFor(t reflect.Type, n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode && holdsSecret(t, 0) {
		return "a single value (not shown: this section holds secrets)"
	}
	return describe(n)
}

// holdsSecret reports whether the section type t has a secret key, at
// any depth.
func holdsSecret(t reflect.Type, depth int) bool {
	if depth > maxDepth {
		return false
	}
	for _, f := range keysOf(t) {
		if secretKeys[f.name] {
			return true
		}
		ft := t.FieldByIndex(f.index).Type
		if ft.Kind() == reflect.Slice || ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if walked(ft) && holdsSecret(ft, depth+1) {
			return true
		}
	}
	return false
}

func sampleKeys(t reflect.Type) string {
	fs := keysOf(t)
	if len(fs) > 2 {
		fs = fs[:2]
	}
	var parts []string
	for _, f := range fs {
		parts = append(parts, f.name+": ...")
	}
	return "{" + strings.Join(parts, ", ") + "}"
}
