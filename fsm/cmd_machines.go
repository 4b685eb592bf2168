package fsm

// Commands on machines (agents): create, update, delete.

import "fmt"

type MachineCreate struct {
	Machine Machine `json:"machine"`
	// Force overwrites the password (and validates) an existing machine.
	Force bool `json:"force,omitempty"`
}

// MachineUpdate patches a machine; nil fields are left alone.
type MachineUpdate struct {
	ID           string  `json:"id"`
	Validated    *bool   `json:"validated,omitempty"`
	Scenarios    *string `json:"scenarios,omitempty"`
	IP           *string `json:"ip,omitempty"`
	Version      *string `json:"version,omitempty"`
	OSName       *string `json:"os_name,omitempty"`
	OSVersion    *string `json:"os_version,omitempty"`
	FeatureFlags *string `json:"feature_flags,omitempty"`
	HubState     []byte  `json:"hubstate,omitempty"`
	Datasources  []byte  `json:"datasources,omitempty"`
}

type MachineDelete struct {
	IDs []string `json:"ids"`
}

func (b MachineCreate) Validate() error {
	var k checker
	m := &b.Machine
	k.name("machine.id", m.ID, true)
	k.blob("machine.pw", m.PasswordHash)
	k.text("machine.ip", m.IP)
	k.name("machine.auth_type", m.AuthType, false)
	k.text("machine.scenarios", m.Scenarios)
	k.text("machine.version", m.Version)
	k.text("machine.os_name", m.OSName)
	k.text("machine.os_version", m.OSVersion)
	k.text("machine.feature_flags", m.FeatureFlags)
	k.blob("machine.hubstate", m.HubState)
	k.blob("machine.datasources", m.Datasources)
	return k.err
}

func (b MachineUpdate) Validate() error {
	var k checker
	k.name("id", b.ID, true)
	// scenarios is a comma-separated list of every installed scenario
	if b.Scenarios != nil && len(*b.Scenarios) > MaxBlob {
		k.fail("scenarios", "longer than %d bytes", MaxBlob)
	}
	k.textp("ip", b.IP)
	k.textp("version", b.Version)
	k.textp("os_name", b.OSName)
	k.textp("os_version", b.OSVersion)
	k.textp("feature_flags", b.FeatureFlags)
	k.blob("hubstate", b.HubState)
	k.blob("datasources", b.Datasources)
	return k.err
}

func (b MachineDelete) Validate() error {
	var k checker
	k.names("ids", b.IDs, true)
	return k.err
}

func (s *state) machineCreate(e entryCtx, b *MachineCreate) *Result {
	now := e.now
	if old, ok := s.machines[b.Machine.ID]; ok {
		if !b.Force {
			return fail(CodeConflict, "user '%s': user already exist", b.Machine.ID)
		}
		m := *old
		m.PasswordHash = b.Machine.PasswordHash
		m.Validated = m.Validated || b.Machine.Validated
		m.UpdatedAt = now
		s.wMachines()[m.ID] = &m
		return &Result{N: 1}
	}
	m := b.Machine
	m.CreatedAt, m.UpdatedAt = now, now
	s.wMachines()[m.ID] = &m
	return &Result{N: 1}
}

func (s *state) machineUpdate(e entryCtx, b *MachineUpdate) *Result {
	now := e.now
	old, ok := s.machines[b.ID]
	if !ok {
		return notFound()
	}
	m := *old
	if b.Validated != nil {
		m.Validated = *b.Validated
	}
	if b.Scenarios != nil {
		m.Scenarios = *b.Scenarios
		m.UpdatedAt = now
	}
	setIf(&m.IP, b.IP)
	setIf(&m.Version, b.Version)
	setIf(&m.OSName, b.OSName)
	setIf(&m.OSVersion, b.OSVersion)
	setIf(&m.FeatureFlags, b.FeatureFlags)
	if b.HubState != nil {
		m.HubState = b.HubState
	}
	if b.Datasources != nil {
		m.Datasources = b.Datasources
	}
	s.wMachines()[m.ID] = &m
	return &Result{N: 1}
}

func (s *state) machineDelete(_ entryCtx, b *MachineDelete) *Result {
	n := 0
	var missing []string
	for _, id := range b.IDs {
		if _, ok := s.machines[id]; ok {
			delete(s.wMachines(), id)
			n++
		} else {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return &Result{N: n, Code: CodeNotFound, Message: fmt.Sprintf("'%s' does not exist", missing[0])}
	}
	return &Result{N: n}
}

// setIf sets *dst to *v when the patch field v is present.
func setIf(dst, v *string) {
	if v != nil {
		*dst = *v
	}
}
