package cliflag

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"strings"
)

// ApplyFile sets every flag of fs named in the file at path that was not
// set on the command line: one `name = value` a line, # comments. The
// file's keys are the flag names, so there is one vocabulary to learn;
// repeated keys (a repeatable flag) add up. Errors name the file and line.
func ApplyFile(fs *flag.FlagSet, path string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return fmt.Errorf("%s:%d: want name = value", path, n)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if k == "config" || fs.Lookup(k) == nil {
			return fmt.Errorf("%s:%d: unknown setting %q", path, n, k)
		}
		if set[k] {
			continue
		}
		if err := fs.Set(k, v); err != nil {
			return fmt.Errorf("%s:%d: %s: %v", path, n, k, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}
