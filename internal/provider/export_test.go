package provider

// FastPathHits is how many plans, refreshes, state upgrades and validations of
// unchanged runs fastServer has answered in this process (the acceptance tests
// serve the provider in-process).
func FastPathHits() (plans, reads, upgrades, validations int64) {
	return fastPlans.Load(), fastReads.Load(), fastUpgrades.Load(), fastValidations.Load()
}

// FastCreatePlans is how many plans of new runs fastServer has answered in
// this process.
func FastCreatePlans() int64 { return fastCreates.Load() }

// FastCreateApplies is how many creates of runs fastServer has answered in
// this process.
func FastCreateApplies() int64 { return fastApplies.Load() }
