package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// which Linux fixes at 100 for user space on every architecture.
const clockTick = 10 * time.Millisecond

// cpuTime returns the CPU time (user + system, all threads) the process pid
// has used so far, from /proc/<pid>/stat.
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStat(data)
}

// parseStat reads utime and stime (fields 14 and 15) from the contents of a
// /proc/<pid>/stat file. The second field, the command name in parentheses,
// may itself contain spaces and parentheses, so fields are counted from the
// last ')'.
func parseStat(data []byte) (time.Duration, error) {
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return 0, fmt.Errorf("proc stat: no command name in %.80q", data)
	}
	// After ") " come field 3 (state), 4, ...: utime is field 14, the
	// 12th after the name.
	fields := bytes.Fields(data[end+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("proc stat: %d fields after the command name, want at least 13", len(fields))
	}
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(string(f), 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("proc stat: bad CPU time %q", f)
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, nil
}
