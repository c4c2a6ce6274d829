package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestLargestPrimeBelow(t *testing.T) {
	for n, want := range map[int]int{0: 0, 2: 0, 3: 2, 10: 7, 100: 97, 1000000: 999983} {
		if got := largestPrimeBelow(n); got != want {
			t.Errorf("largestPrimeBelow(%d) = %d, want %d", n, got, want)
		}
	}
}

func TestHandle(t *testing.T) {
	for _, c := range []struct {
		q    string
		code int
		want string
	}{
		{"/?sleep=1", 200, "Slept for 1 milliseconds."},
		{"/?prime=100", 200, "is 97."},
		{"/?bloat=1", 200, "Allocated 1 MiB."},
		{"/?sleep=abc", 400, "sleep=\"abc\""},
		{"/?bloat=999999", 400, "bloat"},
	} {
		rec := httptest.NewRecorder()
		handle(rec, httptest.NewRequest(http.MethodGet, c.q, nil))
		if rec.Code != c.code || !strings.Contains(rec.Body.String(), c.want) {
			t.Errorf("%s: %d %q, want %d containing %q", c.q, rec.Code, rec.Body.String(), c.code, c.want)
		}
	}
}
