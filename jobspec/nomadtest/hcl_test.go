package nomadtest

import (
	"io"

	"github.com/hashicorp/hcl/v2"
)

func hclWriter(w io.Writer, files map[string]*hcl.File) hcl.DiagnosticWriter {
	return hcl.NewDiagnosticTextWriter(w, files, 100, false)
}
