package obs

import (
	"context"
	"log/slog"
	"slices"
)

// ComponentKey is the log attribute that names the part of bffgate a line
// comes from ("gateway", "issuer", "session.redis").
const ComponentKey = "component"

// ComponentHandler wraps h so that every line carries the component
// attribute at most once.
//
// Several layers name the component: cmd/bffgate gives each listener a
// logger With("component", "gateway"), Obs adds the listener's component
// for its access lines, and stores name themselves on the logger they are
// handed. slog would write each as one more key, and a JSON line with a
// duplicated key is read differently by different parsers (the last wins
// in most, some refuse it). Through this handler the innermost value
// wins: With("component", v) replaces the value before it, in place, and
// a component given with the line itself replaces the logger's.
//
// Only top-level attributes are merged: after WithGroup, attributes go
// into the group, where component is another key.
func ComponentHandler(h slog.Handler) slog.Handler {
	return &componentHandler{base: h, h: h, ci: -1}
}

type componentHandler struct {
	base  slog.Handler // the wrapped handler, without attrs
	attrs []slog.Attr  // what WithAttrs added, the component at most once
	ci    int          // the index of the component in attrs, or -1
	h     slog.Handler // base.WithAttrs(attrs)
}

func isComponent(a slog.Attr) bool { return a.Key == ComponentKey }

func (c *componentHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return c.h.Enabled(ctx, l)
}

func (c *componentHandler) Handle(ctx context.Context, r slog.Record) error {
	if c.ci >= 0 && recordHasComponent(r) {
		// Rare (a line naming its own component): rebuild the attributes
		// without the logger's component rather than write two.
		return c.base.WithAttrs(slices.Delete(slices.Clone(c.attrs), c.ci, c.ci+1)).Handle(ctx, r)
	}
	return c.h.Handle(ctx, r)
}

func recordHasComponent(r slog.Record) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		found = isComponent(a)
		return !found
	})
	return found
}

func (c *componentHandler) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return c
	}
	attrs := slices.Clip(c.attrs)
	next := &componentHandler{base: c.base, ci: c.ci}
	n := 0
	for _, a := range as {
		if isComponent(a) {
			n++
		}
	}
	if n == 0 || (c.ci < 0 && n == 1) {
		// No second component: add to the handler as it is, which keeps
		// the wrapped handler's own WithAttrs work incremental.
		next.attrs = append(attrs, as...)
		if n == 1 {
			next.ci = len(attrs) + slices.IndexFunc(as, isComponent)
		}
		next.h = c.h.WithAttrs(as)
		return next
	}
	merged := slices.Clone(attrs)
	for _, a := range as {
		if isComponent(a) && next.ci >= 0 {
			merged[next.ci] = a
			continue
		}
		if isComponent(a) {
			next.ci = len(merged)
		}
		merged = append(merged, a)
	}
	next.attrs = merged
	next.h = c.base.WithAttrs(merged)
	return next
}

func (c *componentHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return c
	}
	// Inside a group every key is the group's: nothing left to merge.
	return c.h.WithGroup(name)
}
