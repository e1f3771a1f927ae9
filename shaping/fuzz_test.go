package shaping

import (
	"context"
	"testing"
)

// FuzzLoad: no document makes the loader panic, and every document it
// accepts resolves a path.
func FuzzLoad(f *testing.F) {
	f.Add(communityFile)
	f.Add([]byte("[\"default\"]\nconnection_limit = \"local:5\"\n[[\"default\".automation]]\nregex = '^(?!x).*y'\naction = {SetConfig={name=\"max_message_rate\", value=\"1/minute\"}}\ntrigger = {Threshold=\"2/hr\"}\nduration = \"5 minutes\"\n"))
	f.Add([]byte("[provider.p]\nmatch=[{DomainSuffix=\".x\"}]\n[provider.p.sources.s]\nprovider_source_selection_rate = \"1/d\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		opts := Options{
			LookupMX: func(_ context.Context, d string) ([]string, error) { return []string{"mx." + d}, nil },
			SiteName: func(h []string) string { return h[0] },
		}
		s, err := Load(context.Background(), opts, File{Name: "f.toml", Data: data})
		if err != nil {
			return
		}
		if _, err := s.PathConfig(context.Background(), "s", "mx.a.x", "a.x"); err != nil {
			t.Fatal(err)
		}
		s.Observe(context.Background(), "s", "mx.a.x", "a.x", Response{Code: 421, Text: "y"})
	})
}
