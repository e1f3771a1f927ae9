package main

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// parseSize parses a message size: a number of bytes, optionally with a
// k or m suffix (binary: k = 1024, m = 1024²) and an optional trailing
// "b", "B" or "iB": "512", "2k", "10KB", "100KiB", "1m".
func parseSize(s string) (int, error) {
	t := strings.TrimSpace(s)
	low := strings.ToLower(t)
	low = strings.TrimSuffix(low, "ib")
	low = strings.TrimSuffix(low, "b")
	mult := 1
	switch {
	case strings.HasSuffix(low, "k"):
		mult, low = 1<<10, strings.TrimSuffix(low, "k")
	case strings.HasSuffix(low, "m"):
		mult, low = 1<<20, strings.TrimSuffix(low, "m")
	}
	n, err := strconv.Atoi(low)
	if err != nil || low == "" {
		return 0, fmt.Errorf("size %q: want a number of bytes, e.g. 512, 2k, 100k, 1m", s)
	}
	if n <= 0 || n > (256<<20)/mult {
		return 0, fmt.Errorf("size %q: must be between 1 byte and 256m", s)
	}
	return n * mult, nil
}

// formatSize is the inverse of parseSize for display: 2048 → "2k".
func formatSize(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + "m"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + "k"
	}
	return strconv.Itoa(n)
}

// parseSizes parses a comma-separated list of sizes ("1k,2k,100k").
func parseSizes(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := parseSize(f)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// parseInts parses a comma-separated list of positive integers ("1,2,4").
func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q: want a comma-separated list of positive integers", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// percentile returns the p-th percentile (0 < p ≤ 100) of sorted by the
// nearest-rank method: the smallest value with at least p% of the values
// at or below it. It returns 0 for an empty slice.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}

// median returns the median of xs (the mean of the middle two for an even
// count), 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// logfmtValue returns the value of key in a log/slog TextHandler line
// (key=value pairs, values with spaces quoted with Go syntax).
func logfmtValue(line, key string) (string, bool) {
	rest := line
	for rest != "" {
		rest = strings.TrimLeft(rest, " ")
		eq := strings.IndexByte(rest, '=')
		if eq < 0 {
			return "", false
		}
		k := rest[:eq]
		rest = rest[eq+1:]
		var v string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return "", false
			}
			v, _ = strconv.Unquote(q)
			rest = rest[len(q):]
		} else {
			end := strings.IndexByte(rest, ' ')
			if end < 0 {
				end = len(rest)
			}
			v, rest = rest[:end], rest[end:]
		}
		if k == key {
			return v, true
		}
	}
	return "", false
}

// smtpSinkCount parses the last complete counter of Postfix smtp-sink -c
// output ("sess=3 quit=3 mesg=2000", records separated by \r) and
// returns its mesg value.
func smtpSinkCount(record string) (int, error) {
	for f := range strings.FieldsSeq(record) {
		if v, ok := strings.CutPrefix(f, "mesg="); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("no mesg= field")
}

// rcptCounter counts recipients in the command log of smtp-sink -v
// ("smtp-sink: MAIL FROM:<...>", "smtp-sink: RCPT TO:<...>",
// "smtp-sink: ." at the end of DATA, one line per command). The sink is one
// process serving every connection in turn, so the lines of concurrent
// transactions interleave and a RCPT line cannot be tied to its ".". But
// whenever every MAIL seen so far has had its ".", every RCPT seen belongs
// to a completed transaction: that is when the count is known (done). At
// the end of a run all transactions complete, so the final count is exact.
// A transaction that never completes (a client that gives up after RCPT)
// holds the count back until the run times out; MTAs under test do not do
// that when the sink accepts everything.
type rcptCounter struct {
	mails, rcpts, dots int
}

// line takes one line of the log and returns the recipients of completed
// transactions when they are known.
func (c *rcptCounter) line(s string) (n int, done bool) {
	cmd, ok := strings.CutPrefix(s, "smtp-sink: ")
	if !ok {
		return 0, false
	}
	verb, _, _ := strings.Cut(cmd, " ")
	switch strings.ToUpper(verb) {
	case "MAIL":
		c.mails++
	case "RCPT":
		c.rcpts++
	case ".":
		c.dots++
		if c.dots >= c.mails {
			return c.rcpts, true
		}
	}
	return 0, false
}
