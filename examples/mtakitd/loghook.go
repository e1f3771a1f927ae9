package main

import (
	"log/slog"
	"net/url"
	"path/filepath"

	"github.com/mtakit/mtakit/mta/loghooks"
	"github.com/mtakit/mtakit/mta/logs"
)

// withLogHook adds, when c.logHook is set, a log hook that POSTs every
// record to that URL from a durable queue under the data directory
// (KumoMTA's log_hooks:new_json). The returned sink owns local.
func withLogHook(c *config, local logs.Sink, log *slog.Logger) (logs.Sink, error) {
	if c.logHook == "" {
		return local, nil
	}
	hook, err := loghooks.Open(loghooks.Config{Name: "webhook", URL: c.logHook, Dir: filepath.Join(c.dataDir, "loghook"), Logger: log})
	if err != nil {
		return nil, err
	}
	return logs.Multi(local, hook), nil
}

// validURL reports whether s is an absolute http or https URL.
func validURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}
