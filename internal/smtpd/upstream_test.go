package smtpd

// Not part of upstream.patch: this test keeps the copy honest.

import (
	"bytes"
	"go/ast"
	goparser "go/parser"
	"go/printer"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// copiedFiles are the files of go-smtp this package copies; smtp.go is only
// aliased.
var copiedFiles = []string{"backend.go", "conn.go", "data.go", "lengthlimit_reader.go", "parse.go", "server.go"}

// patched are the declarations that upstream.patch changes.
var patched = map[string]bool{
	"dataReader.Read": true,
	"Conn.handleBdat": true,
	// mtakit-only, for listener.Hooks (README.md): Server.Connect and
	// GreetSession (mtakit.go).
	"Server":            true,
	"Server.handleConn": true,
	"Conn.handleGreet":  true,
}

// decls returns the declarations of the Go files in dir named in files, as
// source text without comments, by name ("Type.Method" for methods).
func decls(t *testing.T, dir string, files []string) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	out := map[string]string{}
	print := func(key string, node any) {
		var b bytes.Buffer
		if err := printer.Fprint(&b, fset, node); err != nil {
			t.Fatal(err)
		}
		if _, dup := out[key]; dup {
			t.Fatalf("%s declared twice in %s", key, dir)
		}
		out[key] = b.String()
	}
	for _, name := range files {
		f, err := goparser.ParseFile(fset, filepath.Join(dir, name), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				key := d.Name.Name
				if d.Recv != nil {
					typ := d.Recv.List[0].Type
					if star, ok := typ.(*ast.StarExpr); ok {
						typ = star.X
					}
					key = typ.(*ast.Ident).Name + "." + key
				}
				print(key, d)
			case *ast.GenDecl:
				if d.Tok == token.IMPORT {
					continue
				}
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						print(s.Name.Name, s)
					case *ast.ValueSpec:
						for i, n := range s.Names {
							if n.Name == "_" {
								continue
							}
							// One entry per name: the whole spec and the
							// name's place in it.
							print(n.Name, s)
							out[n.Name] += "#" + strconv.Itoa(i)
						}
					}
				}
			}
		}
	}
	return out
}

// The copy differs from the go-smtp version in go.mod only by the
// declarations upstream.patch changes and those upstream.go aliases. When
// go.mod moves to another go-smtp version, this fails until the copy is
// synced again (see README.md).
func TestCopyMatchesUpstream(t *testing.T) {
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/emersion/go-smtp").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	up := strings.TrimSpace(string(dir))
	if _, err := os.Stat(filepath.Join(up, "conn.go")); err != nil {
		t.Skipf("go-smtp source not available: %v", err)
	}

	upstream := decls(t, up, append(copiedFiles, "smtp.go"))
	ours := decls(t, ".", copiedFiles)
	aliases := decls(t, ".", []string{"upstream.go"})

	var problems []string
	for name, src := range ours {
		upSrc, ok := upstream[name]
		switch {
		case !ok:
			problems = append(problems, name+": not in upstream")
		case patched[name] && src == upSrc:
			problems = append(problems, name+": listed as patched but the same as upstream (merged upstream?)")
		case !patched[name] && src != upSrc:
			problems = append(problems, name+": differs from upstream but is not listed as patched")
		}
	}
	for name := range upstream {
		_, copied := ours[name]
		_, aliased := aliases[name]
		if typ, _, ok := strings.Cut(name, "."); ok {
			_, aliased = aliases[typ] // a method of an aliased type
		}
		if !copied && !aliased {
			problems = append(problems, name+": in upstream but neither copied nor aliased")
		}
		if copied && aliased {
			problems = append(problems, name+": both copied and aliased")
		}
	}
	for name := range patched {
		if _, ok := ours[name]; !ok {
			problems = append(problems, name+": listed as patched but not declared")
		}
	}
	sort.Strings(problems)
	for _, p := range problems {
		t.Error(p)
	}
}
