package copier_test

import (
	"context"
	"os"
	"testing"

	"github.com/pgq-go/pgq/internal/pgtest"
)

var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "node" {
		os.Exit(runNodeProcess(context.Background()))
	}
	os.Exit(pgtest.Main(m, &cluster, pgtest.ExamplesDB("copier_examples")))
}
