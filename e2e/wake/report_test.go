package wake

import (
	"strings"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms ...int) [NumStages]time.Time {
		var a [NumStages]time.Time
		for i, m := range ms {
			if m >= 0 {
				a[i] = t0.Add(time.Duration(m) * time.Millisecond)
			}
		}
		return a
	}
	ws := []Wake{
		{Revision: "a", Sent: t0, Code: 200, At: at(10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 200, 110)},
		// No task setup seen: task started is counted from the stage before it that was.
		{Revision: "b", Sent: t0, Code: 200, At: at(20, 40, 60, 80, 100, 120, -1, 160, 180, 200, 400, 220)},
		{Revision: "c", Sent: t0, Err: "refused"},
	}
	s := Summarize(ws)
	if s.N != 3 || s.OK != 2 || s.P50 != 110*time.Millisecond || s.Max != 220*time.Millisecond {
		t.Fatalf("N %d OK %d p50 %s max %s", s.N, s.OK, s.P50, s.Max)
	}
	if st := s.Stages[TaskSetup]; st.Seen != 1 {
		t.Errorf("task setup seen %d, want 1", st.Seen)
	}
	if st := s.Stages[Started]; st.Seen != 2 || st.FromPrev50 != 10*time.Millisecond || st.Prev95 != 40*time.Millisecond {
		t.Errorf("task started: %+v, want from previous 10 ms (a) and 40 ms (b, from received)", st)
	}
	if s.ScaleCallsInFlight != 50*time.Millisecond { // first activation 10 ms, last scale 60 ms
		t.Errorf("scale calls in flight %s", s.ScaleCallsInFlight)
	}
	var b strings.Builder
	s.Print(&b, "x")
	if !strings.Contains(b.String(), "| task started | 2 | 80 ms | 160 ms | 10 ms | 40 ms |") {
		t.Errorf("table:\n%s", b.String())
	}
}
