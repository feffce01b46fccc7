package copier

// SetReshardHook installs a function called at named points of Reshard
// ("cut", "relayed", "moving", "moved", "switched", "marked", "unmarked"),
// with the node (or pull consumer) concerned; nil removes it.
func SetReshardHook(f func(point, node string)) { testHookReshard = f }
