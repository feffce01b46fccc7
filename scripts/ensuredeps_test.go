// Package scripts_test checks the repository's scripts.
package scripts_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestEnsureDepsNotFooledByWorkingDirectory: from the repository root, the
// Go package folder pgq/ imports as a Python namespace package, so a check
// run there saw python3-pgq as installed on a machine without it. The check
// must look only at what the system interpreter has installed.
func TestEnsureDepsNotFooledByWorkingDirectory(t *testing.T) {
	script, err := filepath.Abs("ensure-deps")
	require.NoError(t, err)
	dir := t.TempDir()
	const mod = "pgqgo_not_installed_probe"
	require.NoError(t, os.Mkdir(filepath.Join(dir, mod), 0o755)) // a folder, like pgq/ in the repo
	cmd := exec.Command(script, "--has-py-module", mod)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PYTHONPATH="+dir)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.True(t, errors.As(err, &exit), "a folder in the working directory is not an installed module: %v %s", err, out)

	// And a module the system interpreter has is found.
	cmd = exec.Command(script, "--has-py-module", "json")
	cmd.Dir = dir
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
}
