package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rouse-run/rouse/control"
	"github.com/rouse-run/rouse/internal/store"
)

// outputFlag is -o/--output: text for people, json for scripts.
type outputFlag struct{ format string }

func (f *outputFlag) register(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.format, "output", "o", "text", "output format: text or json")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))
	prev := cmd.PreRunE
	cmd.PreRunE = func(c *cobra.Command, args []string) error {
		if f.format != "text" && f.format != "json" {
			return usagef("-o %q: the formats are text and json", f.format)
		}
		if prev != nil {
			return prev(c, args)
		}
		return nil
	}
}

func (f *outputFlag) json() bool { return f.format == "json" }

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// routeText is a route in one cell: "hello-00002=90% hello-00001=10%(stable)".
func routeText(route []store.RouteTarget) string {
	if len(route) == 0 {
		return "-"
	}
	var parts []string
	for _, r := range route {
		s := fmt.Sprintf("%s=%d%%", r.Revision, r.Percent)
		if r.Tag != "" {
			s += "(" + r.Tag + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func trafficLine(t store.TrafficTarget) string {
	name := t.Revision
	if t.Latest {
		name = "@latest"
	}
	return name
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// age is a short "how long ago", as kubectl prints it.
func age(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

// progress shows a long operation's steps: on a terminal the current step animates with
// its elapsed time and latest status; elsewhere (CI logs, pipes) each step and status is a
// plain line.
type progress struct {
	w   io.Writer
	tty bool

	mu      sync.Mutex
	step    string
	status  string
	started time.Time
	done    chan struct{}
	ticker  *time.Ticker
}

// spinner frames, one rune each.
const spinner = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

func newProgress(w io.Writer, tty bool) *progress {
	p := &progress{w: w, tty: tty, done: make(chan struct{})}
	if tty {
		p.ticker = time.NewTicker(100 * time.Millisecond)
		go func() {
			frames := []rune(spinner)
			for i := 0; ; i++ {
				select {
				case <-p.done:
					return
				case <-p.ticker.C:
					p.mu.Lock()
					p.redraw(string(frames[i%len(frames)]))
					p.mu.Unlock()
				}
			}
		}()
	}
	return p
}

// redraw repaints the current step's line (terminal only; mu held).
func (p *progress) redraw(mark string) {
	if p.step == "" {
		return
	}
	line := fmt.Sprintf("%s %s %.1fs", mark, p.step, time.Since(p.started).Seconds())
	if p.status != "" {
		line += "  " + p.status
	}
	fmt.Fprintf(p.w, "\r\033[K%s", line)
}

// finishStep closes the current step's line (mu held).
func (p *progress) finishStep(ok bool) {
	if p.step == "" {
		return
	}
	if p.tty {
		mark := "✔"
		if !ok {
			mark = "✘"
		}
		p.status = ""
		p.redraw(mark)
		fmt.Fprintln(p.w)
	}
	p.step = ""
}

func (p *progress) event(e control.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e.Stage {
	case control.StageStatus:
		p.status = e.Message
		if !p.tty {
			fmt.Fprintf(p.w, "  %s\n", e.Message)
		}
	case control.StageDone:
		p.finishStep(true)
		fmt.Fprintln(p.w, e.Message)
	default:
		p.finishStep(true)
		p.step, p.status, p.started = e.Message, "", time.Now()
		if p.tty {
			p.redraw(string([]rune(spinner)[0]))
		} else {
			fmt.Fprintln(p.w, e.Message)
		}
	}
}

// close ends the animation; ok=false marks the step that was running as failed.
func (p *progress) close(ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ticker != nil {
		p.ticker.Stop()
		close(p.done)
		p.ticker = nil
	}
	p.finishStep(ok)
}
