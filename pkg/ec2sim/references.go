package ec2sim

import (
	"fmt"
	"math"
	"slices"
	"strconv"
)

// DescribeImageReferences (EC2 API reference, "DescribeImageReferences";
// user guide "Identify your resources referencing specified AMIs"): which of
// the caller's resources reference the given images. ImageId.N takes 1 to 10
// IDs; either IncludeAllResourceTypes or ResourceType.N is required;
// MaxResults is at least 5. Resource types and their scoping options:
//
//	ec2:Instance                 state-name (instance states; default all)
//	ec2:LaunchTemplate           version-depth (1-10000; default 10)
//	ssm:Parameter, imagebuilder:ImageRecipe, imagebuilder:ContainerRecipe
//
// The emulator answers ec2:Instance from the instances seeded with an
// ImageID and every other type from AddImageReference; it does not model
// launch template versions, so version-depth is validated and otherwise
// ignored. An image ID that is well formed but unknown has no references
// (the check is about IDs that resources hold, and a resource can hold the
// ID of an image that is gone).

// Resource types of DescribeImageReferences.
const (
	RefInstance         = "ec2:Instance"
	RefLaunchTemplate   = "ec2:LaunchTemplate"
	RefSSMParameter     = "ssm:Parameter"
	RefImageRecipe      = "imagebuilder:ImageRecipe"
	RefContainerRecipe  = "imagebuilder:ContainerRecipe"
	maxImageRefIDs      = 10
	minImageRefsResults = 5
)

var refTypes = []string{RefInstance, RefLaunchTemplate, RefSSMParameter, RefImageRecipe, RefContainerRecipe}

type imageRef struct {
	account, imageID, resourceType, arn string
}

// ImageReference is one resource referencing an image.
type ImageReference struct {
	ImageID, ResourceType, ARN string
}

// AddImageReference seeds a reference to an image by a resource the
// emulator does not model (a launch template, an SSM parameter, an Image
// Builder recipe), as DescribeImageReferences reports it to the account in
// the Region. Instances reference the image they were seeded with
// (InstanceSpec.ImageID). An unknown resource type panics: it is a bug in
// the test's seeding.
func (s *Sim) AddImageReference(account, region, imageID, resourceType, arn string) {
	if !slices.Contains(refTypes, resourceType) || resourceType == RefInstance {
		panic(fmt.Sprintf("ec2sim: AddImageReference: resource type %q (one of %v except %s, which comes from InstanceSpec.ImageID)", resourceType, refTypes, RefInstance))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	account, region = defaults(account, region)
	r := s.region(region)
	r.imageRefs = append(r.imageRefs, imageRef{account: account, imageID: imageID, resourceType: resourceType, arn: arn})
}

// RemoveImageReferences removes the seeded references to an image (an
// operator updated the launch template or parameter).
func (s *Sim) RemoveImageReferences(account, region, imageID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	account, region = defaults(account, region)
	r := s.region(region)
	r.imageRefs = slices.DeleteFunc(r.imageRefs, func(ref imageRef) bool { return ref.account == account && ref.imageID == imageID })
}

// refScope is what a request asks for: per resource type, the instance
// states to include (nil: all).
type refScope map[string][]string

func (s *Sim) describeImageReferences(c *call) *apiError {
	ids := c.p.list("ImageId")
	if len(ids) == 0 {
		return errf("MissingParameter", "The request must contain the parameter ImageId")
	}
	if len(ids) > maxImageRefIDs {
		return errf("InvalidParameterValue", "The parameter ImageId accepts at most %d values (got %d)", maxImageRefIDs, len(ids))
	}
	for _, id := range ids {
		if !imageIDRE.MatchString(id) {
			return errf("InvalidAMIID.Malformed", "Invalid id: \"%s\" (expecting \"ami-...\")", id)
		}
	}
	scope, e := refRequestScope(c.p)
	if e != nil {
		return e
	}
	var refs []ImageReference
	for _, id := range slices.Compact(slices.Clone(ids)) {
		if states, ok := scope[RefInstance]; ok {
			for _, in := range sortedInstances(c.r) {
				if in.owner == c.account && in.imageID == id && (states == nil || slices.Contains(states, in.state)) {
					refs = append(refs, ImageReference{ImageID: id, ResourceType: RefInstance,
						ARN: fmt.Sprintf("arn:aws:ec2:%s:%s:instance/%s", c.region, c.account, in.id)})
				}
			}
		}
		for _, ref := range c.r.imageRefs {
			if _, ok := scope[ref.resourceType]; ok && ref.account == c.account && ref.imageID == id {
				refs = append(refs, ImageReference{ImageID: id, ResourceType: ref.resourceType, ARN: ref.arn})
			}
		}
	}
	from, to, next, e := page(c.p, len(refs), minImageRefsResults, math.MaxInt32)
	if e != nil {
		return e
	}
	x := c.out
	x.open("imageReferenceSet")
	for _, ref := range refs[from:to] {
		x.open("item")
		x.el("arn", ref.ARN)
		x.el("imageId", ref.ImageID)
		x.el("resourceType", ref.ResourceType)
		x.close("item")
	}
	x.close("imageReferenceSet")
	x.opt("nextToken", next)
	return nil
}

// refRequestScope reads IncludeAllResourceTypes and ResourceType.N (with
// ResourceTypeOption.M.OptionName / OptionValue.K); options given with
// ResourceType override the defaults IncludeAllResourceTypes applies.
func refRequestScope(p params) (refScope, *apiError) {
	scope := refScope{}
	if p.bool("IncludeAllResourceTypes") {
		for _, t := range refTypes {
			scope[t] = nil
		}
	}
	for i := 1; ; i++ {
		prefix := fmt.Sprintf("ResourceType.%d", i)
		rt := p.get(prefix + ".ResourceType")
		if rt == "" {
			if p.hasPrefix(prefix + ".") {
				return nil, errf("MissingParameter", "The request must contain the parameter %s.ResourceType", prefix)
			}
			break
		}
		if !slices.Contains(refTypes, rt) {
			return nil, errf("InvalidParameterValue", "Value (%s) for parameter ResourceType is invalid. Valid values: %v", rt, refTypes)
		}
		var states []string
		for j := 1; ; j++ {
			opt := fmt.Sprintf("%s.ResourceTypeOption.%d", prefix, j)
			name := p.get(opt + ".OptionName")
			if name == "" {
				break
			}
			values := p.list(opt + ".OptionValue")
			switch {
			case name == "state-name" && rt == RefInstance:
				for _, v := range values {
					if _, ok := stateCodes[v]; !ok {
						return nil, errf("InvalidParameterValue", "Value (%s) for option state-name is invalid. Valid values: pending | running | shutting-down | terminated | stopping | stopped", v)
					}
				}
				states = append(states, values...)
			case name == "version-depth" && rt == RefLaunchTemplate:
				for _, v := range values {
					if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 10000 {
						return nil, errf("InvalidParameterValue", "Value (%s) for option version-depth is invalid. Expecting an integer between 1 and 10000", v)
					}
				}
			default:
				return nil, errf("InvalidParameterValue", "Option %s is not valid for resource type %s (state-name: ec2:Instance; version-depth: ec2:LaunchTemplate)", name, rt)
			}
		}
		scope[rt] = states
	}
	if len(scope) == 0 {
		return nil, errf("MissingParameter", "Either IncludeAllResourceTypes or ResourceTypes must be specified")
	}
	return scope, nil
}
