package skytools

// ParseIntervalForTest exposes the interval reader to the external tests.
var ParseIntervalForTest = parseInterval
