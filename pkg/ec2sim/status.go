package ec2sim

import (
	"fmt"
	"slices"
)

func init() { actions["DescribeInstanceStatus"] = (*Sim).describeInstanceStatus }

// describeInstanceStatus reports status checks. As in EC2, only running
// instances are listed unless IncludeAllInstances is true (the others then
// report not-applicable); instance IDs that do not exist fail with
// InvalidInstanceID.NotFound.
func (s *Sim) describeInstanceStatus(c *call) *apiError {
	ids, e := s.instanceIDs(c)
	if e != nil {
		return e
	}
	all := c.p.bool("IncludeAllInstances")
	now := s.now()
	type row struct {
		in                 *instance
		state, inst, sysSt string
	}
	var match []row
	for _, in := range sortedInstances(c.r) {
		if in.owner != c.account || (len(ids) > 0 && !slices.Contains(ids, in.id)) {
			continue
		}
		st := in.stateAt(now)
		if st != "running" && !all {
			continue
		}
		is, ss := in.statusAt(now)
		ok := true
		for _, f := range c.p.filters() {
			var v string
			switch f.name {
			case "instance-state-name":
				v = st
			case "instance-state-code":
				v = fmt.Sprint(stateCodes[st])
			case "instance-status.status":
				v = is
			case "system-status.status":
				v = ss
			case "availability-zone":
				v = c.region + "a"
			default:
				return errf("InvalidParameterValue", "The filter '%s' is invalid", f.name)
			}
			ok = ok && anyGlob(f.values, v)
		}
		if ok {
			match = append(match, row{in, st, is, ss})
		}
	}
	from, to, next, e := page(c.p, len(match), 5, 1000)
	if e != nil {
		return e
	}
	x := c.out
	x.open("instanceStatusSet")
	for _, m := range match[from:to] {
		x.open("item")
		x.el("instanceId", m.in.id)
		x.el("availabilityZone", c.region+"a")
		x.open("instanceState")
		x.el("code", fmt.Sprint(stateCodes[m.state]))
		x.el("name", m.state)
		x.close("instanceState")
		writeStatus(x, "systemStatus", m.sysSt)
		writeStatus(x, "instanceStatus", m.inst)
		x.close("item")
	}
	x.close("instanceStatusSet")
	x.opt("nextToken", next)
	return nil
}

// writeStatus writes a status summary with its reachability detail
// (passed, failed or initializing), none when not applicable.
func writeStatus(x *xmlw, tag, status string) {
	x.open(tag)
	x.el("status", status)
	if detail := map[string]string{statusOK: "passed", statusImpaired: "failed", statusInit: "initializing"}[status]; detail != "" {
		x.open("details")
		x.open("item")
		x.el("name", "reachability")
		x.el("status", detail)
		x.close("item")
		x.close("details")
	}
	x.close(tag)
}
