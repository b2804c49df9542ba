package provider

// FastPathHits is how many plans and refreshes of unchanged runs fastServer has
// answered in this process (the acceptance tests serve the provider in-process).
func FastPathHits() (plans, reads int64) { return fastPlans.Load(), fastReads.Load() }
