package remote_test

import (
	"os"
	"testing"

	"github.com/pgq-go/pgq/internal/pgtest"
)

var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelperProcess())
	}
	os.Exit(pgtest.Main(m, &cluster, pgtest.ExamplesDB("remote_examples")))
}
