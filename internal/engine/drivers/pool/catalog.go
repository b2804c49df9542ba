// Package cluster is the managed, autoscaling node pool (aml_compute): node
// agents on the engine host claim queued runs from the workspace store with
// heartbeated leases, gang-schedule multi-node runs, and scale between
// min_nodes and max_nodes on their own, with or without Terraform running.
package pool

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun"
)

// VMSize is a node shape: the CPUs, memory and GPUs one node gets.
type VMSize struct {
	Name     string
	Cores    int
	MemoryMB int64
	GPUs     int
}

// Catalog holds the Azure sizes the Azure ML docs use (D-series, NC-series).
var Catalog = []VMSize{
	{"STANDARD_D1_V2", 1, 3584, 0},
	{"STANDARD_D2_V2", 2, 7168, 0},
	{"STANDARD_D3_V2", 4, 14336, 0},
	{"STANDARD_D4_V2", 8, 28672, 0},
	{"STANDARD_D11_V2", 2, 14336, 0},
	{"STANDARD_D12_V2", 4, 28672, 0},
	{"STANDARD_D13_V2", 8, 57344, 0},
	{"STANDARD_DS1_V2", 1, 3584, 0},
	{"STANDARD_DS2_V2", 2, 7168, 0},
	{"STANDARD_DS3_V2", 4, 14336, 0},
	{"STANDARD_D2S_V3", 2, 8192, 0},
	{"STANDARD_D4S_V3", 4, 16384, 0},
	{"STANDARD_D8S_V3", 8, 32768, 0},
	{"STANDARD_NC6", 6, 57344, 1},
	{"STANDARD_NC12", 12, 114688, 2},
	{"STANDARD_NC24", 24, 229376, 4},
	{"STANDARD_NC6S_V3", 6, 114688, 1},
	{"STANDARD_NC4AS_T4_V3", 4, 28672, 1},
}

// customPattern is "CUSTOM_<cores>C_<memory>GB[_<gpus>GPU]", e.g. CUSTOM_1C_2GB.
var customPattern = regexp.MustCompile(`(?i)^custom_(\d+)c_(\d+)gb(?:_(\d+)gpu)?$`)

// SizeNames lists the catalog for error messages and docs.
func SizeNames() []string {
	names := make([]string, len(Catalog))
	for i, s := range Catalog {
		names[i] = s.Name
	}
	sort.Strings(names)
	return append(names, "CUSTOM_<cores>C_<memory>GB[_<gpus>GPU]")
}

// LookupSize resolves a size name (case-insensitive, like Azure).
func LookupSize(name string) (VMSize, error) {
	for _, s := range Catalog {
		if strings.EqualFold(s.Name, name) {
			return s, nil
		}
	}
	if m := customPattern.FindStringSubmatch(name); m != nil {
		cores, _ := strconv.Atoi(m[1])
		mem, _ := strconv.ParseInt(m[2], 10, 64)
		gpus := 0
		if m[3] != "" {
			gpus, _ = strconv.Atoi(m[3])
		}
		if cores < 1 || mem < 1 {
			return VMSize{}, fmt.Errorf("custom size %q needs at least 1 core and 1 GB", name)
		}
		return VMSize{Name: strings.ToUpper(name), Cores: cores, MemoryMB: mem * 1024, GPUs: gpus}, nil
	}
	return VMSize{}, fmt.Errorf("unknown vm_size %q; valid sizes: %s", name, strings.Join(SizeNames(), ", "))
}

// Host is the capacity of the machine the nodes run on.
type Host struct {
	Cores    int
	MemoryMB int64
	GPUs     int
}

// ThisHost measures the engine host (the local driver's probe), once per
// process: pools ask on every observation, and the capacity does not change.
var ThisHost = sync.OnceValue(func() Host {
	f := hostrun.ProbeHost(context.Background())
	return Host{Cores: f.Cores, MemoryMB: f.MemoryBytes >> 20, GPUs: f.GPUs}
})

// Fits reports, as an error naming the host's capacity, a size one node of
// which this host could not hold. Several nodes may share the host's cores.
func (h Host) Fits(s VMSize) error {
	if s.Cores > h.Cores || (h.MemoryMB > 0 && s.MemoryMB > h.MemoryMB) || s.GPUs > h.GPUs {
		return fmt.Errorf("vm_size %s (%d cores, %d MB, %d GPUs) is larger than this host (%d cores, %d MB, %d GPUs); choose a smaller size, e.g. a CUSTOM_<cores>C_<memory>GB shape",
			s.Name, s.Cores, s.MemoryMB, s.GPUs, h.Cores, h.MemoryMB, h.GPUs)
	}
	return nil
}

// CPUSet is the CPUs of the node in slot: nodes take consecutive blocks of
// cores, wrapping around when the pool has more cores than the host.
func (h Host) CPUSet(s VMSize, slot int) []int {
	cpus := make([]int, 0, s.Cores)
	for i := 0; i < s.Cores; i++ {
		cpus = append(cpus, (slot*s.Cores+i)%h.Cores)
	}
	return cpus
}

// GPUSet is the GPUs of the node in slot (empty when the size has none).
func (h Host) GPUSet(s VMSize, slot int) []int {
	if s.GPUs == 0 || h.GPUs == 0 {
		return nil
	}
	gpus := make([]int, 0, s.GPUs)
	for i := 0; i < s.GPUs; i++ {
		gpus = append(gpus, (slot*s.GPUs+i)%h.GPUs)
	}
	return gpus
}
