package testenv

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// TestDatabaseRegistry: the database numbers are distinct, and no two
// packages use the same one — packages' tests run at once, and each
// empties its database before and after every test.
func TestDatabaseRegistry(t *testing.T) {
	t.Parallel()
	f, err := parser.ParseFile(token.NewFileSet(), "testenv.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	numbers := map[string]int{} // DBX → number
	owner := map[int]string{}   // number → DBX
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || len(vs.Names) != 1 || len(vs.Values) != 1 || !strings.HasPrefix(vs.Names[0].Name, "DB") {
			return true
		}
		lit, ok := vs.Values[0].(*ast.BasicLit)
		if !ok {
			t.Errorf("%s is not a number literal", vs.Names[0].Name)
			return true
		}
		v, _ := strconv.Atoi(lit.Value)
		name := vs.Names[0].Name
		if other, dup := owner[v]; dup {
			t.Errorf("%s and %s are both database %d", name, other, v)
		}
		numbers[name], owner[v] = v, name
		return true
	})
	if len(numbers) == 0 {
		t.Fatal("no DB constants found in testenv.go")
	}

	use := regexp.MustCompile(`testenv\.(DB[A-Za-z]+)`)
	users := map[string]map[string]bool{} // DBX → package dirs
	root := filepath.Join("..", "..")
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != root || d.Name() == "vendor" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range use.FindAllStringSubmatch(string(b), -1) {
			if _, ok := numbers[m[1]]; !ok {
				t.Errorf("%s uses testenv.%s, which is not declared", path, m[1])
				continue
			}
			if users[m[1]] == nil {
				users[m[1]] = map[string]bool{}
			}
			users[m[1]][filepath.Dir(path)] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for db, dirs := range users {
		if len(dirs) > 1 {
			var list []string
			for d := range dirs {
				list = append(list, d)
			}
			sort.Strings(list)
			t.Errorf("testenv.%s (database %d) is used by %d packages: %s; give each its own",
				db, numbers[db], len(list), strings.Join(list, ", "))
		}
	}
}
