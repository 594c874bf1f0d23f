package rpc_test

import (
	"go/ast"
	"go/doc"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// exported lists what `go doc` shows of the package in dir: its exported
// types, functions, and methods (as Type.Method).
func exported(t *testing.T, dir string) map[string]bool {
	fset := token.NewFileSet()
	var files []*ast.File
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, parser.ParseComments)
		require.NoError(t, err)
		files = append(files, f)
	}
	p, err := doc.NewFromFiles(fset, files, "example.com/x")
	require.NoError(t, err)
	names := map[string]bool{}
	for _, f := range p.Funcs {
		names[f.Name] = true
	}
	for _, ty := range p.Types {
		names[ty.Name] = true
		for _, f := range ty.Funcs {
			names[f.Name] = true
		}
		for _, m := range ty.Methods {
			names[ty.Name+"."+m.Name] = true
		}
	}
	return names
}

// The connection's plumbing is not part of the API: a user cannot put raw
// frames on the wire or grant credit.
func TestNoPlumbingInTheAPI(t *testing.T) {
	st := exported(t, "../stream")
	for _, name := range []string{"Role", "Link", "Config", "New", "Frame", "Budget", "NewBudget",
		"Stream.PopFrame", "Stream.HandleFrame", "Stream.AddCredit", "Stream.Fail", "Stream.Unhold", "Stream.ReturnWindow"} {
		assert.False(t, st[name], "package stream exports %s", name)
	}
	assert.True(t, st["Stream.Read"] && st["Stream.Write"] && st["Stream.NetConn"], "the stream's own methods are there")
	r := exported(t, ".")
	for _, name := range []string{"Conn.Schedule", "Conn.SendFrame", "Conn.SendCredit", "Conn.Release"} {
		assert.False(t, r[name], "package rpc exports %s", name)
	}
}
