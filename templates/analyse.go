package templates

import (
	"fmt"
	"slices"
	"strings"
	"text/template/parse"

	"github.com/oshirase/oshirase/notice"
)

// The fast path of Prepared rests on a static analysis of a locale's three
// parse trees. It accepts a template only if the recipient can change the
// output in two ways: by which branch a {{with}} or {{if}} on a recipient
// field takes, which depends only on whether the field is empty, and by the
// field's value printed as it is (text/template) or through html/template's
// escaper for HTML text, which escapeHTMLText replicates. A field is one of
// the recipient's own (.Recipient.Name, …) or an extra column of the upload
// as templates read them: index .Recipient.Extra "plan", "" when a
// recipient lacks it. (.Recipient.Extra.plan fails validation, which renders
// with a sample recipient that has no extra columns.) Then a rendering
// with a marker in place of each non-empty field, the marker replaced by the
// value afterwards, is the rendering with the value. Anything else that
// touches the recipient makes the analysis give up, and every notice of that
// template and locale is rendered in full.

// Recipient fields the fast path can substitute; a field's index is its bit
// in a shape and its marker's number. The recipient's own come first, then
// the extra columns a plan uses, up to maxFields in all.
const (
	fieldName = iota
	fieldEmail
	fieldCustomerID
	fieldCardBrand
	fieldCardLast4
	numFields // the recipient's own

	maxFields = 16
)

var fieldNames = [numFields]string{"Name", "Email", "CustomerID", "CardBrand", "CardLast4"}

// fieldValues appends r's fields to dst in field order: its own, then the
// extra columns named by extra ("" for one r lacks, as index gives).
func fieldValues(dst []string, r *notice.Recipient, extra []string) []string {
	dst = append(dst, r.Name, r.Email, r.CustomerID, r.CardBrand, r.CardLast4)
	for _, k := range extra {
		dst = append(dst, r.Extra[k])
	}
	return dst
}

// setField sets field i of r; extra names the extra columns.
func setField(r *notice.Recipient, extra []string, i int, v string) {
	if i >= numFields {
		if r.Extra == nil {
			r.Extra = make(map[string]string, len(extra))
		}
		r.Extra[extra[i-numFields]] = v
		return
	}
	switch i {
	case fieldName:
		r.Name = v
	case fieldEmail:
		r.Email = v
	case fieldCustomerID:
		r.CustomerID = v
	case fieldCardBrand:
		r.CardBrand = v
	case fieldCardLast4:
		r.CardLast4 = v
	}
}

// htmlTextEscaper is the function html/template appends to an action that
// prints into HTML text. Other contexts (attributes, URLs, RCDATA, script,
// style) get other escapers, which the fast path does not replicate.
const htmlTextEscaper = "_html_template_htmlescaper"

// plan is the result of analysing one locale of a template.
type plan struct {
	uses  uint32   // bit i: field i appears in a template
	extra []string // the extra columns used: fields numFields, numFields+1, …
	leads []rune   // marker leads that no template text contains
}

// field returns the index of extra column k, adding it to the plan.
func (p *plan) field(k string) (int, bool) {
	if i := slices.Index(p.extra, k); i >= 0 {
		return numFields + i, true
	}
	if numFields+len(p.extra) == maxFields {
		return 0, false
	}
	p.extra = append(p.extra, k)
	return numFields + len(p.extra) - 1, true
}

// planFor analyses lt's templates; an error says why the fast path cannot
// be used. The HTML template must have been executed once, so that its tree
// is the escaped one. (Were it not, every action that prints a field would
// lack the escaper and be refused: the analysis errs on the safe side.)
func planFor(lt *localized) (*plan, error) {
	p := &plan{}
	trees := []*parse.Tree{lt.subject.Tree, lt.text.Tree, lt.html.Tree}
	var texts []string // what the templates can print of their own
	for i, tree := range trees {
		a := analyser{plan: p, tree: tree, html: i == 2}
		if err := a.walk(tree.Root, dot{kind: dotRoot}); err != nil {
			return nil, err
		}
		texts = append(append(texts, tree.Root.String()), a.strings...)
	}
	// A marker must not be something a template prints of its own. One a
	// helper makes ({{printf "%c" 0xe000}}) is refused by split, or caught
	// by the comparison with a full rendering.
	for _, lead := range markerLeads {
		if !slices.ContainsFunc(texts, func(s string) bool { return strings.ContainsRune(s, lead) }) {
			p.leads = append(p.leads, lead)
		}
	}
	if len(p.leads) == 0 {
		return nil, fmt.Errorf("%s: the templates contain every marker", lt.subject.Name())
	}
	return p, nil
}

// dot is what dot holds at a point in a template.
type dot struct {
	kind  int // dotRoot, dotField or dotOther
	field int // with dotField: which field
}

const (
	dotRoot  = iota // the Input: .Recipient.X is a field
	dotField        // a recipient field's value, in the body of {{with .Recipient.X}}
	dotOther        // anything else: campaign data, a list item, a helper's result
)

type analyser struct {
	plan    *plan
	tree    *parse.Tree
	html    bool     // tree is an escaped html/template tree
	strings []string // string constants, unquoted
}

func (a *analyser) errorf(n parse.Node, format string, args ...any) error {
	loc, _ := a.tree.ErrorContext(n)
	return fmt.Errorf("%s: %s", loc, fmt.Sprintf(format, args...))
}

func (a *analyser) walk(n parse.Node, d dot) error {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := a.walk(c, d); err != nil {
				return err
			}
		}
		return nil
	case *parse.TextNode, *parse.CommentNode, *parse.BreakNode, *parse.ContinueNode:
		return nil
	case *parse.ActionNode:
		if _, ok := a.slot(n.Pipe, d); ok {
			return nil
		}
		return a.free(n.Pipe, d)
	case *parse.IfNode:
		if _, ok := a.ref(n.Pipe, d); !ok {
			if err := a.free(n.Pipe, d); err != nil {
				return err
			}
		}
		if err := a.walk(n.List, d); err != nil {
			return err
		}
		return a.walk(n.ElseList, d)
	case *parse.WithNode:
		body := dot{kind: dotOther}
		if i, ok := a.ref(n.Pipe, d); ok {
			body = dot{kind: dotField, field: i}
		} else if err := a.free(n.Pipe, d); err != nil {
			return err
		}
		if err := a.walk(n.List, body); err != nil {
			return err
		}
		return a.walk(n.ElseList, d) // {{else}} keeps dot
	case *parse.RangeNode:
		if err := a.free(n.Pipe, d); err != nil {
			return err
		}
		if err := a.walk(n.List, dot{kind: dotOther}); err != nil {
			return err
		}
		return a.walk(n.ElseList, d)
	case *parse.TemplateNode:
		// The called template would need analysing with what it is passed.
		return a.errorf(n, "{{template}} is not analysed")
	default:
		return a.errorf(n, "unexpected %T", n)
	}
}

// slot reports the field an action prints, if it prints nothing but a
// recipient field, as is: {{.Recipient.X}}, {{$.Recipient.X}}, or {{.}} in
// the body of {{with .Recipient.X}}; in HTML, followed only by the escaper
// for HTML text.
func (a *analyser) slot(p *parse.PipeNode, d dot) (int, bool) {
	if p == nil || len(p.Decl) > 0 {
		return 0, false
	}
	cmds := p.Cmds
	if a.html {
		if len(cmds) != 2 || !isIdent(cmds[1], htmlTextEscaper) {
			return 0, false
		}
		cmds = cmds[:1]
	}
	if len(cmds) != 1 {
		return 0, false
	}
	return a.refCmd(cmds[0], d)
}

// ref reports the field a {{with}} or {{if}} tests, if its pipeline is
// nothing but a recipient field.
func (a *analyser) ref(p *parse.PipeNode, d dot) (int, bool) {
	if p == nil || len(p.Decl) > 0 || len(p.Cmds) != 1 {
		return 0, false
	}
	return a.refCmd(p.Cmds[0], d)
}

func (a *analyser) refCmd(c *parse.CommandNode, d dot) (int, bool) {
	i, ok := a.fieldOf(c, d)
	if ok {
		a.plan.uses |= 1 << i
	}
	return i, ok
}

// fieldOf reports the field a command is, if it is nothing but a field:
// .Recipient.X or index .Recipient.Extra "k" (from the Input or $), or . in
// the body of a {{with}} on a field.
func (a *analyser) fieldOf(c *parse.CommandNode, d dot) (int, bool) {
	if len(c.Args) == 3 && isIdentNode(c.Args[0], "index") {
		k, ok := c.Args[2].(*parse.StringNode)
		if !ok || !slices.Equal(rootPath(c.Args[1], d), []string{"Recipient", "Extra"}) {
			return 0, false
		}
		return a.plan.field(k.Text)
	}
	if len(c.Args) != 1 {
		return 0, false
	}
	if _, ok := c.Args[0].(*parse.DotNode); ok {
		return d.field, d.kind == dotField
	}
	if path := rootPath(c.Args[0], d); len(path) == 2 && path[0] == "Recipient" {
		if i := slices.Index(fieldNames[:], path[1]); i >= 0 {
			return i, true
		}
	}
	return 0, false // ID, Locale, Extra…: not substituted
}

// rootPath is the chain of field names n takes from the Input: .A.B at the
// root, or $.A.B anywhere ($ is the Input: free refuses assigning to it).
func rootPath(n parse.Node, d dot) []string {
	switch n := n.(type) {
	case *parse.FieldNode:
		if d.kind == dotRoot {
			return n.Ident
		}
	case *parse.VariableNode:
		if n.Ident[0] == "$" {
			return n.Ident[1:]
		}
	}
	return nil
}

// free returns an error if n, a pipeline or part of one, uses the
// recipient, or could: the whole Input, a recipient field's value, $
// assigned to.
func (a *analyser) free(n parse.Node, d dot) error {
	bad := false
	switch n := n.(type) {
	case *parse.PipeNode:
		if n == nil {
			return nil
		}
		for _, v := range n.Decl {
			if v.Ident[0] == "$" {
				return a.errorf(n, "assigns to $")
			}
		}
		for _, c := range n.Cmds {
			if err := a.free(c, d); err != nil {
				return err
			}
		}
	case *parse.CommandNode:
		for _, arg := range n.Args {
			if err := a.free(arg, d); err != nil {
				return err
			}
		}
	case *parse.ChainNode:
		return a.free(n.Node, d)
	case *parse.FieldNode:
		bad = d.kind == dotField || d.kind == dotRoot && n.Ident[0] == "Recipient"
	case *parse.DotNode:
		bad = d.kind != dotOther
	case *parse.VariableNode:
		// Other variables hold only what free pipelines gave them.
		bad = n.Ident[0] == "$" && (len(n.Ident) == 1 || n.Ident[1] == "Recipient")
	case *parse.StringNode:
		a.strings = append(a.strings, n.Text)
	case *parse.IdentifierNode, *parse.NumberNode, *parse.BoolNode, *parse.NilNode:
	default:
		bad = true
	}
	if bad {
		return a.errorf(n, "%s: the recipient used other than printed as is or tested by {{with}} or {{if}}", n)
	}
	return nil
}

func isIdent(c *parse.CommandNode, name string) bool {
	return len(c.Args) == 1 && isIdentNode(c.Args[0], name)
}

func isIdentNode(n parse.Node, name string) bool {
	id, ok := n.(*parse.IdentifierNode)
	return ok && id.Ident == name
}
