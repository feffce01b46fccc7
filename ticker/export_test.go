package ticker

// SQLTick is the round statement, for tests.
const SQLTick = sqlTick
