package config

// PinTools is tool pinning for one upstream (rug-pull protection): the
// gateway keeps a digest of each tool's name, description, inputSchema and
// annotations, and quarantines a tool whose definition changes until an
// operator approves the new one.
type PinTools struct {
	// Mode is "record" (trust on first use: a tool is pinned the first time
	// the gateway sees it) or "file" (only the tools pinned in File are
	// trusted; any other is quarantined as new).
	Mode string `yaml:"mode"`
	// File holds the pins as JSON, for an operator to review. Required with
	// mode file (it must exist); optional with mode record, where pins are
	// loaded from it if it exists and written to it as tools are recorded
	// or approved. Without it, record-mode pins live in memory only. The
	// file is read again when it changes (checked at each tools/list).
	File string `yaml:"file"`
}

// Pin modes.
const (
	PinRecord = "record"
	PinFile   = "file"
)

func (v *validator) pinTools(path string, p *PinTools) {
	if p == nil {
		return
	}
	switch p.Mode {
	case PinRecord:
	case PinFile:
		if p.File == "" {
			v.add(path+".pin_tools.file", "required with mode file: the JSON file of reviewed pins (write one with mode record first)")
		}
	default:
		v.add(path+".pin_tools.mode", "must be record or file")
	}
}
