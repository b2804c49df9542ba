package main

import "context"

func (c *cli) ui(ctx context.Context, args []string) error { return usageErr("ui: not built yet") }
