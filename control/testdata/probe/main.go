// probe is control's test workload for templates and volumes: it answers on $PORT with
// what an instance sees. GET /env?name=N prints $N; /file?path=P prints file P (relative
// to $NOMAD_TASK_DIR); /write?path=P writes P and says "ok" or the error; /healthz "ok".
package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
)

func main() {
	resolve := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(os.Getenv("NOMAD_TASK_DIR"), "..", p) // the task dir holds local/ and secrets/
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, os.Getenv(r.URL.Query().Get("name")))
	})
	mux.HandleFunc("/file", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(resolve(r.URL.Query().Get("path")))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		_, _ = w.Write(b)
	})
	mux.HandleFunc("/write", func(w http.ResponseWriter, r *http.Request) {
		if err := os.WriteFile(resolve(r.URL.Query().Get("path")), []byte("written"), 0o644); err != nil {
			fmt.Fprint(w, err.Error())
			return
		}
		fmt.Fprint(w, "ok")
	})
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	if err := http.ListenAndServe(":"+port, mux); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
