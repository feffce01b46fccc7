package remote_test

const helperEnv = "PGQ_REMOTE_HELPER"

func runHelperProcess() int { return 0 }
