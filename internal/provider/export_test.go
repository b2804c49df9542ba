package provider

// FastPathHits is how many plans, refreshes and state upgrades of unchanged
// runs fastServer has answered in this process (the acceptance tests serve the
// provider in-process).
func FastPathHits() (plans, reads, upgrades int64) {
	return fastPlans.Load(), fastReads.Load(), fastUpgrades.Load()
}
