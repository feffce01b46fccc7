package copier_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestTargetedCopyTwoCopiesPerNode runs two processes of every node at once
// (a rolling deploy that overlaps, a paused process that resumes), killing
// and restarting one of them at random moments while rows are produced:
// relays and pulls of one node race on every tick, and every row still ends
// on its targets exactly once.
func TestTargetedCopyTwoCopiesPerNode(t *testing.T) {
	t.Parallel()
	cc := newCopyCluster(t, 3, 1, copier.RoutingShared, func(int) *pgtest.Cluster { return cluster }, cluster)
	cc.setupAll()
	cc.startTicker()
	rng := rand.New(rand.NewPCG(11, 12))
	procs := map[string]*exec.Cmd{}
	startNode := func(n string, copy int) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"=node", "NODE="+n,
			"LOCAL_DSN="+cc.local[n].DSN, "HUB_DSN="+cc.hubs[0].DSN)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		require.NoError(t, cmd.Start())
		procs[fmt.Sprintf("%s/%d", n, copy)] = cmd
	}
	kill := func(key string) {
		_ = procs[key].Process.Signal(syscall.SIGKILL)
		_ = procs[key].Wait()
	}
	t.Cleanup(func() {
		for k := range procs {
			kill(k)
		}
	})
	for _, n := range cc.nodes {
		startNode(n, 0)
		startNode(n, 1)
	}
	for round := range 15 {
		for _, n := range cc.nodes {
			cc.produce(n, 10+round, rng)
		}
		victim, copy := cc.nodes[rng.IntN(len(cc.nodes))], rng.IntN(2)
		time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond) // the random moment, not a wait for a condition
		kill(fmt.Sprintf("%s/%d", victim, copy))
		startNode(victim, copy)
	}
	require.Eventually(t, cc.delivered, 120*time.Second, 50*time.Millisecond)
	cc.verify()
}
