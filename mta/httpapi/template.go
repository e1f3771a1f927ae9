package httpapi

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/nikolalohinski/gonja/v2"
	"github.com/nikolalohinski/gonja/v2/config"
	"github.com/nikolalohinski/gonja/v2/exec"
	"github.com/nikolalohinski/gonja/v2/loaders"
)

// Template dialects of InjectRequest.TemplateDialect.
const (
	DialectJinja  = "Jinja"
	DialectStatic = "Static"
)

// template is one templated field of an injection, compiled once per
// request and rendered per recipient.
type template struct {
	source string
	tpl    *exec.Template // nil: static text
}

// compileTemplate parses source in dialect. Jinja templates are parsed by
// gonja with a loader that knows only this template, so {% include %} and
// {% extends %} cannot read files.
func compileTemplate(name, source, dialect string) (*template, error) {
	t := &template{source: source}
	if dialect == DialectStatic || source == "" {
		return t, nil
	}
	loader, err := loaders.NewMemoryLoader(map[string]string{"/" + name: source})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	err = guard(func() error {
		var perr error
		t.tpl, perr = exec.NewTemplate("/"+name, config.New(), loader, gonja.DefaultEnvironment)
		return perr
	})
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", name, err)
	}
	return t, nil
}

// guard runs f and turns a panic into an error: gonja panics on some
// input (an integer division by zero in an expression, found by
// FuzzPrepareAndBuild), and a request must not take the server down.
func guard(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("template engine failed: %v", p)
		}
	}()
	return f()
}

// render expands the template with vars into at most limit bytes.
func (t *template) render(vars map[string]any, limit int64) (string, error) {
	if t == nil {
		return "", nil
	}
	if t.tpl == nil {
		return t.source, nil
	}
	out := &limitedBuffer{max: int(limit)}
	err := guard(func() error { return t.tpl.Execute(out, exec.NewContext(vars)) })
	if err != nil {
		return "", fmt.Errorf("expand template: %w", err)
	}
	return out.String(), nil
}

var errTooLarge = errors.New("template output exceeds twice Config.MaxBodyBytes")

// limitedBuffer is a bytes.Buffer that refuses to grow past max.
type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		return 0, errTooLarge
	}
	return b.Buffer.Write(p)
}

func (b *limitedBuffer) WriteString(s string) (int, error) {
	if b.Len()+len(s) > b.max {
		return 0, errTooLarge
	}
	return b.Buffer.WriteString(s)
}
