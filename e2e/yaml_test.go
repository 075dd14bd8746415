//go:build linux

package e2e_test

import (
	"fmt"
	"strings"
)

// The module has no YAML library, and deploy/kubernetes needs only a small
// part of YAML, so the tests parse that part themselves: block mappings and
// sequences, plain and quoted scalars, empty or one-line flow collections
// of scalars, comments and "---" between documents. Anything else (anchors,
// tags, block scalars, tabs) is an error, which keeps the manifests plain.
// Scalars stay strings: "true", "8080".

type yamlLine struct {
	n      int // line number, from 1
	indent int
	text   string // without indentation and comment
}

// parseYAML parses src into one value per document: map[string]any, []any,
// string, or nil for an empty value.
func parseYAML(src string) ([]any, error) {
	var docs []any
	var lines []yamlLine
	flush := func() error {
		if len(lines) == 0 {
			return nil
		}
		p := &yamlParser{lines: lines}
		v, err := p.block(lines[0].indent)
		if err != nil {
			return err
		}
		if p.i < len(p.lines) {
			return fmt.Errorf("line %d: unexpected indentation", p.lines[p.i].n)
		}
		docs = append(docs, v)
		lines = nil
		return nil
	}
	for i, raw := range strings.Split(src, "\n") {
		if strings.HasPrefix(raw, "---") {
			if err := flush(); err != nil {
				return nil, err
			}
			continue
		}
		if strings.Contains(raw, "\t") {
			return nil, fmt.Errorf("line %d: tab character", i+1)
		}
		text := stripYAMLComment(raw)
		if strings.TrimSpace(text) == "" {
			continue
		}
		trimmed := strings.TrimLeft(text, " ")
		if strings.ContainsAny(trimmed[:1], "&*!|>%@`") {
			return nil, fmt.Errorf("line %d: unsupported YAML %q", i+1, trimmed)
		}
		lines = append(lines, yamlLine{n: i + 1, indent: len(text) - len(trimmed), text: strings.TrimRight(trimmed, " ")})
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return docs, nil
}

// stripYAMLComment removes a comment: # at the start or after a space,
// outside quotes.
func stripYAMLComment(s string) string {
	if i := indexUnquoted(s, func(i int) bool { return s[i] == '#' && (i == 0 || s[i-1] == ' ') }); i >= 0 {
		return s[:i]
	}
	return s
}

// indexUnquoted returns the first index i of s outside single or double
// quotes at which at(i) holds, or -1.
func indexUnquoted(s string, at func(i int) bool) int {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case at(i):
			return i
		}
	}
	return -1
}

type yamlParser struct {
	lines []yamlLine
	i     int
}

func isSeqItem(text string) bool { return text == "-" || strings.HasPrefix(text, "- ") }

func (p *yamlParser) block(indent int) (any, error) {
	if p.i >= len(p.lines) || p.lines[p.i].indent != indent {
		return nil, nil
	}
	if isSeqItem(p.lines[p.i].text) {
		return p.seq(indent)
	}
	return p.mapping(indent)
}

func (p *yamlParser) seq(indent int) (any, error) {
	var items []any
	for p.i < len(p.lines) && p.lines[p.i].indent == indent && isSeqItem(p.lines[p.i].text) {
		l := p.lines[p.i]
		rest := strings.TrimLeft(strings.TrimPrefix(l.text, "-"), " ")
		switch {
		case rest == "":
			p.i++
			if p.i < len(p.lines) && p.lines[p.i].indent > indent {
				v, err := p.block(p.lines[p.i].indent)
				if err != nil {
					return nil, err
				}
				items = append(items, v)
			} else {
				items = append(items, nil)
			}
		case isSeqItem(rest) || mappingKey(rest) != "":
			// "- key: value" opens a mapping whose keys line up with key.
			p.lines[p.i] = yamlLine{n: l.n, indent: indent + len(l.text) - len(rest), text: rest}
			v, err := p.block(p.lines[p.i].indent)
			if err != nil {
				return nil, err
			}
			items = append(items, v)
		default:
			v, err := yamlScalar(rest, l.n)
			if err != nil {
				return nil, err
			}
			items = append(items, v)
			p.i++
		}
	}
	return items, nil
}

func (p *yamlParser) mapping(indent int) (any, error) {
	m := map[string]any{}
	for p.i < len(p.lines) && p.lines[p.i].indent == indent && !isSeqItem(p.lines[p.i].text) {
		l := p.lines[p.i]
		key := mappingKey(l.text)
		if key == "" {
			return nil, fmt.Errorf("line %d: want key: value, got %q", l.n, l.text)
		}
		k, err := yamlScalar(key, l.n)
		if err != nil {
			return nil, err
		}
		ks, _ := k.(string)
		if _, dup := m[ks]; dup {
			return nil, fmt.Errorf("line %d: duplicate key %q", l.n, ks)
		}
		rest := strings.TrimLeft(l.text[len(key)+1:], " ")
		p.i++
		if rest != "" {
			if m[ks], err = yamlScalar(rest, l.n); err != nil {
				return nil, err
			}
			continue
		}
		// A nested block: deeper, or a sequence at the key's own indent.
		switch {
		case p.i < len(p.lines) && p.lines[p.i].indent > indent:
			m[ks], err = p.block(p.lines[p.i].indent)
		case p.i < len(p.lines) && p.lines[p.i].indent == indent && isSeqItem(p.lines[p.i].text):
			m[ks], err = p.seq(indent)
		default:
			m[ks] = nil
		}
		if err != nil {
			return nil, err
		}
	}
	return m, nil
}

// mappingKey returns the key part of "key: value" or "key:", or "" (also
// for a flow collection, whose [ or { comes first).
func mappingKey(text string) string {
	i := indexUnquoted(text, func(i int) bool {
		c := text[i]
		return c == '[' || c == '{' || c == ':' && (i == len(text)-1 || text[i+1] == ' ')
	})
	if i < 0 || text[i] != ':' {
		return ""
	}
	return text[:i]
}

func yamlScalar(s string, line int) (any, error) {
	switch {
	case s == "":
		return nil, nil
	case s == "[]":
		return []any{}, nil
	case s == "{}":
		return map[string]any{}, nil
	case strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]"):
		var items []any
		for _, part := range strings.Split(s[1:len(s)-1], ",") {
			v, err := yamlScalar(strings.TrimSpace(part), line)
			if err != nil {
				return nil, err
			}
			items = append(items, v)
		}
		return items, nil
	case strings.HasPrefix(s, `"`):
		if len(s) < 2 || !strings.HasSuffix(s, `"`) || strings.Contains(s, `\`) {
			return nil, fmt.Errorf("line %d: unsupported double-quoted scalar %s", line, s)
		}
		return s[1 : len(s)-1], nil
	case strings.HasPrefix(s, "'"):
		if len(s) < 2 || !strings.HasSuffix(s, "'") {
			return nil, fmt.Errorf("line %d: unterminated single-quoted scalar %s", line, s)
		}
		return strings.ReplaceAll(s[1:len(s)-1], "''", "'"), nil
	case strings.ContainsAny(s[:1], "{[]}&*!|>%@`"):
		return nil, fmt.Errorf("line %d: unsupported YAML %q", line, s)
	}
	return s, nil
}

// yamlGet walks v by map keys (string) and list indexes (int); nil if any
// step is missing.
func yamlGet(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func yamlString(v any, path ...any) string {
	s, _ := yamlGet(v, path...).(string)
	return s
}

func yamlList(v any, path ...any) []any {
	l, _ := yamlGet(v, path...).([]any)
	return l
}
