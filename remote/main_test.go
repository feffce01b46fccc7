package remote_test

import (
	"os"
	"testing"

	"github.com/pgq-go/pgq/internal/pgtest"
	"go.uber.org/goleak"
)

var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelperProcess())
	}
	cluster = pgtest.MustStart()
	code := m.Run()
	cluster.Close()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			println("goleak:", err.Error())
			code = 1
		}
	}
	os.Exit(code)
}
