package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux platform Go supports.
const clockTick = 100

// cpuTime is the CPU time (user + system) process pid has used so far.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: the
	// fields that follow start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

// peakRSS is VmHWM of process pid: the most resident memory it has had
// since it started or since resetPeak.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status: VmHWM %q", pid, v)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmHWM", pid)
}

// resetPeak sets VmHWM back to the current RSS (Linux 4.0+), so that each
// measurement sees its own peak. It reports whether that worked.
func resetPeak(pid int) bool {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) == nil
}

// procSet measures a group of processes together.
type procSet []int

func (ps procSet) cpu() time.Duration {
	var sum time.Duration
	for _, pid := range ps {
		if d, err := cpuTime(pid); err == nil {
			sum += d
		}
	}
	return sum
}

// peak is the sum of the processes' peaks (each may peak at another moment,
// so it is an upper bound of the group's peak).
func (ps procSet) peak() int64 {
	var sum int64
	for _, pid := range ps {
		if n, err := peakRSS(pid); err == nil {
			sum += n
		}
	}
	return sum
}

func (ps procSet) resetPeak() bool {
	ok := true
	for _, pid := range ps {
		ok = resetPeak(pid) && ok
	}
	return ok
}

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

func getenv(k string) string { return os.Getenv(k) }
