package issuerclient

import (
	"fmt"
	"net/url"
	"strings"

	"golang.org/x/net/html"
)

// Form is an HTML form as a browser would submit it.
type Form struct {
	// Action is the action attribute as written: resolve it against the
	// page's URL.
	Action string
	// Method is the method attribute in upper case ("" when absent).
	Method string
	// Fields are the form's named inputs and buttons with their values (the
	// issuer's login form: the sealed request, the CSRF token, and empty
	// username and password).
	Fields url.Values
}

// ParseForm returns the first form of an HTML page, such as the issuer's
// login page (web/templates/login.html), with the named inputs and
// buttons inside it.
func ParseForm(page string) (Form, error) {
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		return Form{}, err
	}
	form := findElement(doc, "form")
	if form == nil {
		return Form{}, fmt.Errorf("no form in the page: %s", pageText(page, 1000))
	}
	f := Form{Action: attr(form, "action"), Method: strings.ToUpper(attr(form, "method")), Fields: url.Values{}}
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && (n.Data == "input" || n.Data == "button") && attr(n, "name") != "" {
			f.Fields.Add(attr(n, "name"), attr(n, "value"))
		}
		for ch := n.FirstChild; ch != nil; ch = ch.NextSibling {
			walk(ch)
		}
	}
	walk(form)
	return f, nil
}

// findElement returns the first element named tag under n, in document
// order, or nil.
func findElement(n *html.Node, tag string) *html.Node {
	if n.Type == html.ElementNode && n.Data == tag {
		return n
	}
	for ch := n.FirstChild; ch != nil; ch = ch.NextSibling {
		if found := findElement(ch, tag); found != nil {
			return found
		}
	}
	return nil
}

// attr returns n's attribute k, or "".
func attr(n *html.Node, k string) string {
	for _, a := range n.Attr {
		if a.Key == k {
			return a.Val
		}
	}
	return ""
}

// pageText is the visible text of an HTML page, white space folded and
// clipped to n bytes, for a failure message: it shows what the page said
// (an error, a login failure) without its attributes, where the login
// form keeps its CSRF token and sealed request.
func pageText(page string, n int) string {
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		return fmt.Sprintf("(%d bytes that are not HTML)", len(page))
	}
	var b strings.Builder
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && (n.Data == "script" || n.Data == "style") {
			return
		}
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
			b.WriteByte(' ')
		}
		for ch := n.FirstChild; ch != nil; ch = ch.NextSibling {
			walk(ch)
		}
	}
	walk(doc)
	return clip(strings.Join(strings.Fields(b.String()), " "), n)
}
