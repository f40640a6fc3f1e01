package registry

import (
	"io"
	"os"
)

func osStderr() io.Writer { return os.Stderr }
