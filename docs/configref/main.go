// Command configref writes docs/CONFIG.md, the configuration reference of
// fieldpass-broker, fieldpass-connector and fieldpass: every command's
// flags with their types and defaults, the environment variables, and the
// keys of the config files. It builds the three binaries and reads their
// own help (the top-level usage for the commands, "COMMAND -h" for each
// command's flags), so the reference says what the binaries say; its test
// fails when the two differ.
//
//	go run ./docs/configref -o docs/CONFIG.md   (make config-reference)
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
)

func main() {
	out := flag.String("o", "docs/CONFIG.md", "file to write (- for stdout)")
	flag.Parse()
	root, err := moduleRoot()
	if err == nil {
		var doc []byte
		if doc, err = generate(root); err == nil {
			if *out == "-" {
				_, err = os.Stdout.Write(doc)
			} else {
				err = os.WriteFile(*out, doc, 0o644)
			}
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "configref: %v\n", err)
		os.Exit(1)
	}
}

// binary is one of the three programs the reference covers.
type binary struct {
	name string
	// configCommand takes --config FILE, whose keys are its own flags.
	configCommand string
	// configNote describes a config file other than --config.
	configNote string
	// env describes the variables the binary reads that its help does not
	// name (its source is checked against this and the help: see the test).
	env map[string]string
}

var binaries = []binary{
	{name: "fieldpass-broker", configCommand: "serve", env: map[string]string{
		"STATE_DIRECTORY":      "Set by systemd for a unit with `StateDirectory=`: the default of `serve --key-file` becomes `$STATE_DIRECTORY/broker.key` (the first directory if several), and of `serve --acme-cache` `$STATE_DIRECTORY/acme`.",
		"USER":                 "With `LOGNAME`, names the operator in the audit log (`operator:USER@HOST`) of the admin commands when the user database does not.",
		"LOGNAME":              "See `USER`.",
		"FIELDPASS_PUBLIC_URL": "The broker's public URL, as in `broker.env`: `token create` names it in the enrol command it prints on stderr (the systemd unit passes it to `serve --public-url`).",
	}},
	{name: "fieldpass-connector", configCommand: "run", env: map[string]string{
		"SSL_CERT_FILE": "A PEM file of the CAs to trust instead of the system's, for `enroll` to a broker whose certificate a private CA issued.",
	}},
	{name: "fieldpass", configNote: "`fieldpass login` saves the login in `$XDG_CONFIG_HOME/fieldpass/config.json` (mode 0600): " +
		"`broker` (the URL), `token`, `email` and `expires_at`. It is written by `login` and `logout`, not by hand; " +
		"`FIELDPASS_BROKER` and `FIELDPASS_TOKEN` override it.", env: map[string]string{
		"FIELDPASS_CA_FILE": "A PEM file of a private CA to trust for the broker's certificate, besides the system's roots.",
		"XDG_CONFIG_HOME":   "Where `login` saves the broker and token: `$XDG_CONFIG_HOME/fieldpass/config.json` (default `~/.config/fieldpass/config.json`).",
		"HOME":              "Finds `~/.config` when `XDG_CONFIG_HOME` is not set.",
		"SSL_CERT_FILE":     "A PEM file of the CAs to trust instead of the system's roots.",
	}},
}

// sentenceRE splits a paragraph into sentences: up to a full stop that
// ends a word and is followed by a space, or the end.
var sentenceRE = regexp.MustCompile(`.*?(?:\.(?: |$)|$)`)

// envRE finds the environment variables a help text names.
var envRE = regexp.MustCompile(`\b(FIELDPASS_[A-Z0-9_]+|STATE_DIRECTORY|XDG_CONFIG_HOME|SSL_CERT_FILE)\b`)

// command is one command of a binary, as its help describes it.
type command struct {
	words    []string // "device disable"
	synopsis []string // the Usage: lines
	text     string   // the help between the synopsis and the flags
	flags    []flagDoc
}

type flagDoc struct {
	name, arg, usage, def string
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside the fieldpass module")
	}
	return filepath.Dir(gomod), nil
}

// generate builds the binaries of the module at root and renders the
// reference from their help.
func generate(root string) ([]byte, error) {
	dir, err := os.MkdirTemp("", "configref-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, b := range binaries {
		args = append(args, "./cmd/"+b.name)
	}
	build := exec.Command("go", args...)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build: %v\n%s", err, out)
	}
	var doc bytes.Buffer
	doc.WriteString(header)
	for _, b := range binaries {
		cmds, top, err := describe(filepath.Join(dir, b.name), b.name)
		if err != nil {
			return nil, err
		}
		render(&doc, b, cmds, top)
	}
	return doc.Bytes(), nil
}

const header = `# Configuration reference

<!-- Generated by "make config-reference" (go run ./docs/configref) from the
help of the binaries themselves. Do not edit: change the flag, then run it;
go test ./docs/configref fails while this file and the binaries differ. -->

Every flag, environment variable and config-file key of the three binaries,
with its default. Flags are written ` + "`--name value`" + ` or ` + "`--name=value`" + ` (one
dash works too); a boolean flag is ` + "`--name`" + ` or ` + "`--name=false`" + `. Repeatable flags
say so. Command-line flags win over config files and the environment.

- [fieldpass-broker](#fieldpass-broker): the broker (` + "`serve`" + `) and the operator's admin commands
- [fieldpass-connector](#fieldpass-connector): the device agent
- [fieldpass](#fieldpass): the CLI people use

`

// help runs bin with args (ending in -h) in an environment of PATH alone,
// so that defaults come out as on a fresh host.
func help(bin string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, stderr.Bytes())
	}
	return stdout.String(), nil
}

// describe reads the top-level usage of bin for its commands, then each
// command's help for its flags. Alternatives (disable|enable) are asked
// one by one and merged when their help is the same.
func describe(bin, name string) ([]command, string, error) {
	top, err := help(bin, "-h")
	if err != nil {
		return nil, "", err
	}
	var cmds []command
	seen := map[string]bool{}
	for _, line := range strings.Split(top, "\n") {
		rest, ok := strings.CutPrefix(line, "  "+name+" ")
		if !ok {
			continue
		}
		var words []string
		for _, w := range strings.Fields(rest) {
			if !regexp.MustCompile(`^[a-z][a-z-]*(\|[a-z][a-z-]*)*$`).MatchString(w) {
				break
			}
			words = append(words, w)
		}
		if len(words) == 0 {
			continue
		}
		last := words[len(words)-1]
		var group *command
		for _, alt := range strings.Split(last, "|") {
			ws := append(slices.Clone(words[:len(words)-1]), alt)
			key := strings.Join(ws, " ")
			if seen[key] {
				continue
			}
			seen[key] = true
			out, err := help(bin, append(ws, "-h")...)
			if err != nil {
				return nil, "", err
			}
			c := parseHelp(out)
			c.words = ws
			if group != nil && slices.Equal(flagNames(group.flags), flagNames(c.flags)) {
				group.words[len(group.words)-1] += " | " + alt
				continue
			}
			cmds = append(cmds, c)
			group = &cmds[len(cmds)-1]
		}
	}
	if len(cmds) == 0 {
		return nil, "", fmt.Errorf("%s -h lists no commands", name)
	}
	return cmds, top, nil
}

func flagNames(fs []flagDoc) []string {
	var n []string
	for _, f := range fs {
		n = append(n, f.name+" "+f.def)
	}
	return n
}

var (
	flagLineRE = regexp.MustCompile(`^  -(\S+)(?: (.+))?$`)
	defaultRE  = regexp.MustCompile(` \(default (.*)\)$`)
)

// parseHelp reads a command's help: "Usage: ..." lines, a text, then
// "Flags:" and the flag package's PrintDefaults.
func parseHelp(out string) command {
	var c command
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	i := 0
	for ; i < len(lines); i++ {
		l := lines[i]
		if s, ok := strings.CutPrefix(l, "Usage: "); ok {
			c.synopsis = append(c.synopsis, s)
		} else if len(c.synopsis) > 0 && strings.HasPrefix(l, "       ") && strings.TrimSpace(l) != "" {
			c.synopsis = append(c.synopsis, strings.TrimSpace(l))
		} else {
			break
		}
	}
	var text []string
	for ; i < len(lines) && lines[i] != "Flags:"; i++ {
		text = append(text, lines[i])
	}
	c.text = strings.TrimSpace(strings.Join(text, "\n"))
	for i++; i < len(lines); i++ {
		if m := flagLineRE.FindStringSubmatch(lines[i]); m != nil {
			c.flags = append(c.flags, flagDoc{name: m[1], arg: m[2]})
			continue
		}
		if u, ok := strings.CutPrefix(lines[i], "    \t"); ok && len(c.flags) > 0 {
			f := &c.flags[len(c.flags)-1]
			f.usage = strings.TrimSpace(f.usage + " " + u)
		}
	}
	for i := range c.flags {
		f := &c.flags[i]
		if m := defaultRE.FindStringSubmatchIndex(f.usage); m != nil {
			f.def = f.usage[m[2]:m[3]]
			f.usage = f.usage[:m[0]]
		}
		if f.arg == "" {
			f.arg = "bool" // the flag package prints no type for a boolean
		}
	}
	return c
}

// envUse is where a binary's help names an environment variable.
type envUse struct {
	flags []string // "serve --database-url"
	texts []string // sentences of command help or the top-level usage
}

func render(doc *bytes.Buffer, b binary, cmds []command, top string) {
	fmt.Fprintf(doc, "## %s\n\n", b.name)
	env := map[string]*envUse{}
	use := func(v string) *envUse {
		if env[v] == nil {
			env[v] = &envUse{}
		}
		return env[v]
	}
	// The sentences of a help text that name a variable say what for.
	addTexts := func(text string) {
		for _, para := range strings.Split(text, "\n\n") {
			for _, sentence := range sentenceRE.FindAllString(strings.Join(strings.Fields(para), " "), -1) {
				sentence = strings.TrimSpace(sentence)
				for _, v := range envRE.FindAllString(sentence, -1) {
					if u := use(v); !slices.Contains(u.texts, sentence) {
						u.texts = append(u.texts, sentence)
					}
				}
			}
		}
	}
	addTexts(top)
	for _, c := range cmds {
		addTexts(c.text)
		for _, f := range c.flags {
			for _, v := range envRE.FindAllString(f.usage+" "+f.def, -1) {
				u := use(v)
				if name := strings.Join(c.words, " ") + " --" + f.name; !slices.Contains(u.flags, name) {
					u.flags = append(u.flags, name)
				}
			}
		}
	}
	for v := range b.env {
		use(v)
	}
	names := make([]string, 0, len(env))
	for v := range env {
		names = append(names, v)
	}
	sort.Strings(names)
	doc.WriteString("### Environment\n\n| Variable | Read for |\n|---|---|\n")
	for _, v := range names {
		u := env[v]
		var parts []string
		if len(u.flags) > 0 {
			// One entry per flag name, with the commands it is of.
			var order []string
			of := map[string][]string{}
			for _, f := range u.flags {
				cmd, name, _ := strings.Cut(f, " --")
				if of[name] == nil {
					order = append(order, name)
				}
				of[name] = append(of[name], cmd)
			}
			var fl []string
			for _, name := range order {
				fl = append(fl, "`--"+name+"` of "+strings.Join(of[name], ", "))
			}
			parts = append(parts, "the default of "+strings.Join(fl, "; "))
		}
		if d := b.env[v]; d != "" {
			parts = append(parts, d)
		} else {
			for _, t := range u.texts {
				parts = append(parts, "“"+t+"”")
			}
		}
		fmt.Fprintf(doc, "| `%s` | %s |\n", v, cell(strings.Join(parts, "; ")))
	}
	doc.WriteString("\n")
	if b.configCommand != "" {
		fmt.Fprintf(doc, "### Config file\n\n`%s %s --config FILE` reads one setting a line, `name = value`, with `#` comments; "+
			"the names are the flags of [`%s`](#%s) below (but `config`), a repeatable flag may be given on several lines, "+
			"and a flag given on the command line wins over the file.\n\n", b.name, b.configCommand, b.configCommand, anchor(b.name, b.configCommand))
	}
	if b.configNote != "" {
		fmt.Fprintf(doc, "### Config file\n\n%s\n\n", b.configNote)
	}
	for _, c := range cmds {
		fmt.Fprintf(doc, "### %s %s\n\n", b.name, strings.Join(c.words, " "))
		for _, s := range c.synopsis {
			fmt.Fprintf(doc, "    %s\n", s)
		}
		doc.WriteString("\n")
		if len(c.flags) == 0 {
			doc.WriteString("No flags.\n\n")
			continue
		}
		doc.WriteString("| Flag | Value | Default | Description |\n|---|---|---|---|\n")
		for _, f := range c.flags {
			def := "—"
			if f.def != "" {
				def = "`" + strings.Trim(f.def, `"`) + "`"
				if f.def == `""` {
					def = "—"
				}
			}
			fmt.Fprintf(doc, "| `--%s` | %s | %s | %s |\n", f.name, cell(f.arg), cell(def), cell(f.usage))
		}
		doc.WriteString("\n")
	}
}

// anchor is the GitHub heading anchor of "### BIN COMMAND".
func anchor(bin, cmd string) string {
	return strings.ReplaceAll(bin+" "+cmd, " ", "-")
}

// cell makes s fit in one Markdown table cell.
func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}
