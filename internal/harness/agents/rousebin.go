package agents

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rouse-run/rouse/internal/revmeta"
)

// RouseBinary is the rouse binary a Nomad client the harness starts advertises as
// meta.rouse_bin (revmeta.GuardBinMeta): a revision with a hard concurrency limit runs
// `${meta.rouse_bin} guard` beside its app and is placed only where the meta is set. With
// $ROUSE_BIN set (the Makefile sets it to bin/rouse, built once for every test package)
// it is that, which must be the absolute path of an executable file; otherwise ./cmd/rouse
// of this module is built into dir (the go build cache makes a second build a link).
func RouseBinary(dir string) (string, error) {
	if p := os.Getenv("ROUSE_BIN"); p != "" {
		if err := checkExecutable(p); err != nil {
			return "", fmt.Errorf("ROUSE_BIN=%s: %w (set it to the absolute path of a rouse binary, e.g. `make build` then $PWD/bin/rouse, or unset it to build one)", p, err)
		}
		return p, nil
	}
	out := filepath.Join(dir, "rouse")
	if err := GoBuild("./cmd/rouse", out); err != nil {
		return "", fmt.Errorf("build the rouse binary for meta.%s (or set ROUSE_BIN): %w", revmeta.GuardBinMeta, err)
	}
	return out, nil
}

// checkExecutable reports why p is not the absolute path of an executable regular file.
func checkExecutable(p string) error {
	if !filepath.IsAbs(p) {
		return errors.New("not an absolute path")
	}
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return errors.New("not a regular file")
	}
	if st.Mode()&0o111 == 0 {
		return errors.New("not executable")
	}
	return nil
}
