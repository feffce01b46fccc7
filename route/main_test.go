package route_test

import (
	"os"
	"testing"

	"github.com/pgq-go/pgq/internal/pgtest"
)

var cluster *pgtest.Cluster

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &cluster, pgtest.ExamplesDB("route_examples"))) }
