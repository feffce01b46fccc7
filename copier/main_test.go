package copier_test

import (
	"context"
	"os"
	"testing"

	"github.com/pgq-go/pgq/internal/pgtest"
)

var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "node":
		os.Exit(runNodeProcess(context.Background()))
	case "backfill":
		os.Exit(runBackfillProcess(context.Background()))
	}
	os.Exit(pgtest.Main(m, &cluster, pgtest.ExamplesDB("copier_examples")))
}
