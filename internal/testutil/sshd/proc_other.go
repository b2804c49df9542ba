//go:build !linux

package sshd

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }

// descendants needs /proc; elsewhere connection helpers find nothing.
func descendants(int) []int { return nil }

func killUID(string) {}

func killMentioning(string) {}

func isRunning(int) bool { return false }
