package ec2sim_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/amibackup/amibackup/pkg/ec2sim"
)

// refsOf pages through DescribeImageReferences with the real SDK client
// and returns "imageId resourceType arn" lines in answer order.
func refsOf(t *testing.T, c *ec2.Client, in *ec2.DescribeImageReferencesInput) ([]string, int, error) {
	t.Helper()
	var out []string
	pages := 0
	pg := ec2.NewDescribeImageReferencesPaginator(c, in)
	for pg.HasMorePages() {
		page, err := pg.NextPage(context.Background())
		if err != nil {
			return nil, pages, err
		}
		pages++
		for _, r := range page.ImageReferences {
			out = append(out, fmt.Sprintf("%s %s %s", aws.ToString(r.ImageId), r.ResourceType, aws.ToString(r.Arn)))
		}
	}
	return out, pages, nil
}

// TestDescribeImageReferences: instances launched from an image and seeded
// launch templates, SSM parameters and recipes come back in EC2's response
// shape through the real SDK client, scoped by resource type, instance
// state, account and Region, and paginated.
func TestDescribeImageReferences(t *testing.T) {
	sim, u := start(t, ec2sim.Options{})
	const acct, region = ec2sim.DefaultAccount, ec2sim.DefaultRegion
	a, _ := sim.AddImage(ec2sim.ImageSpec{Name: "image-a"})
	b, _ := sim.AddImage(ec2sim.ImageSpec{Name: "image-b"})
	unused, _ := sim.AddImage(ec2sim.ImageSpec{Name: "image-unused"})
	running := sim.AddInstance(ec2sim.InstanceSpec{ImageID: a})
	stopped := sim.AddInstance(ec2sim.InstanceSpec{ImageID: a, State: "stopped"})
	terminated := sim.AddInstance(ec2sim.InstanceSpec{ImageID: a, State: "terminated"})
	sim.AddInstance(ec2sim.InstanceSpec{ImageID: a, Account: "222222222222"}) // another account's
	sim.AddInstance(ec2sim.InstanceSpec{ImageID: a, Region: "eu-west-1"})     // another Region's
	lt := "arn:aws:ec2:us-east-1:123456789012:launch-template/lt-0123456789abcdef0"
	param := "arn:aws:ssm:us-east-1:123456789012:parameter/golden/web"
	recipe := "arn:aws:imagebuilder:us-east-1:123456789012:image-recipe/web/1.0.0"
	sim.AddImageReference(acct, region, b, ec2sim.RefLaunchTemplate, lt)
	sim.AddImageReference(acct, region, b, ec2sim.RefSSMParameter, param)
	sim.AddImageReference(acct, region, b, ec2sim.RefImageRecipe, recipe)
	sim.AddImageReference("222222222222", region, b, ec2sim.RefSSMParameter, "arn:aws:ssm:us-east-1:222222222222:parameter/theirs")
	c := client(t, u, acct, region)

	inst := func(id string) string { return "arn:aws:ec2:us-east-1:123456789012:instance/" + id }
	live := types.ResourceTypeRequest{ResourceType: types.ImageReferenceResourceTypeEc2Instance, ResourceTypeOptions: []types.ResourceTypeOption{
		{OptionName: types.ImageReferenceOptionNameStateName, OptionValues: []string{"pending", "running", "stopping", "stopped"}}}}
	tests := []struct {
		name  string
		in    ec2.DescribeImageReferencesInput
		want  []string
		pages int
	}{
		{"instances not terminated, launch templates, parameters", ec2.DescribeImageReferencesInput{ImageIds: []string{a, b, unused},
			ResourceTypes: []types.ResourceTypeRequest{live, {ResourceType: types.ImageReferenceResourceTypeEc2LaunchTemplate,
				ResourceTypeOptions: []types.ResourceTypeOption{{OptionName: types.ImageReferenceOptionNameVersionDepth, OptionValues: []string{"20"}}}},
				{ResourceType: types.ImageReferenceResourceTypeSsmParameter}}},
			[]string{a + " ec2:Instance " + inst(running), a + " ec2:Instance " + inst(stopped), b + " ec2:LaunchTemplate " + lt, b + " ssm:Parameter " + param}, 1},
		{"all types: every state and the recipe", ec2.DescribeImageReferencesInput{ImageIds: []string{a, b}, IncludeAllResourceTypes: aws.Bool(true)},
			[]string{a + " ec2:Instance " + inst(running), a + " ec2:Instance " + inst(stopped), a + " ec2:Instance " + inst(terminated),
				b + " ec2:LaunchTemplate " + lt, b + " ssm:Parameter " + param, b + " imagebuilder:ImageRecipe " + recipe}, 1},
		{"all types with instance options: the options win", ec2.DescribeImageReferencesInput{ImageIds: []string{a}, IncludeAllResourceTypes: aws.Bool(true),
			ResourceTypes: []types.ResourceTypeRequest{live}},
			[]string{a + " ec2:Instance " + inst(running), a + " ec2:Instance " + inst(stopped)}, 1},
		{"paginated by 5", ec2.DescribeImageReferencesInput{ImageIds: []string{a, b}, IncludeAllResourceTypes: aws.Bool(true), MaxResults: aws.Int32(5)},
			[]string{a + " ec2:Instance " + inst(running), a + " ec2:Instance " + inst(stopped), a + " ec2:Instance " + inst(terminated),
				b + " ec2:LaunchTemplate " + lt, b + " ssm:Parameter " + param, b + " imagebuilder:ImageRecipe " + recipe}, 2},
		{"unreferenced and unknown images have none", ec2.DescribeImageReferencesInput{ImageIds: []string{unused, "ami-0123456789abcdef0"}, IncludeAllResourceTypes: aws.Bool(true)},
			nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, pages, err := refsOf(t, c, &tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) || pages != tt.pages {
				t.Fatalf("got %d pages:\n%s\nwant %d pages:\n%s", pages, strings.Join(got, "\n"), tt.pages, strings.Join(tt.want, "\n"))
			}
		})
	}

	// The instance's launch image is what DescribeInstances reports too.
	out, err := c.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{running}})
	if err != nil || aws.ToString(out.Reservations[0].Instances[0].ImageId) != a {
		t.Fatalf("DescribeInstances imageId: %v", err)
	}
	// Updating the template and parameter removes their references.
	sim.RemoveImageReferences(acct, region, b)
	if got, _, err := refsOf(t, c, &ec2.DescribeImageReferencesInput{ImageIds: []string{b}, IncludeAllResourceTypes: aws.Bool(true)}); err != nil || len(got) != 0 {
		t.Fatalf("after removal: %v %v", got, err)
	}
	// Another account sees its own references only.
	other, _, err := refsOf(t, client(t, u, "222222222222", region), &ec2.DescribeImageReferencesInput{ImageIds: []string{a, b}, IncludeAllResourceTypes: aws.Bool(true)})
	if err != nil || len(other) != 2 || !strings.Contains(other[1], "parameter/theirs") {
		t.Fatalf("account 222222222222: %v %v", other, err)
	}
}

func TestDescribeImageReferencesRejects(t *testing.T) {
	sim, u := start(t, ec2sim.Options{})
	img, _ := sim.AddImage(ec2sim.ImageSpec{Name: "img"})
	c := client(t, u, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	eleven := make([]string, 11)
	for i := range eleven {
		eleven[i] = fmt.Sprintf("ami-%017x", i+1)
	}
	all := aws.Bool(true)
	for _, tc := range []struct {
		name, code string
		in         ec2.DescribeImageReferencesInput
	}{
		{"more than 10 images", "InvalidParameterValue", ec2.DescribeImageReferencesInput{ImageIds: eleven, IncludeAllResourceTypes: all}},
		{"no resource types", "MissingParameter", ec2.DescribeImageReferencesInput{ImageIds: []string{img}}},
		{"malformed image ID", "InvalidAMIID.Malformed", ec2.DescribeImageReferencesInput{ImageIds: []string{"image-1"}, IncludeAllResourceTypes: all}},
		{"unknown resource type", "InvalidParameterValue", ec2.DescribeImageReferencesInput{ImageIds: []string{img},
			ResourceTypes: []types.ResourceTypeRequest{{ResourceType: "ec2:Volume"}}}},
		{"unknown instance state", "InvalidParameterValue", ec2.DescribeImageReferencesInput{ImageIds: []string{img},
			ResourceTypes: []types.ResourceTypeRequest{{ResourceType: types.ImageReferenceResourceTypeEc2Instance,
				ResourceTypeOptions: []types.ResourceTypeOption{{OptionName: types.ImageReferenceOptionNameStateName, OptionValues: []string{"sleeping"}}}}}}},
		{"state-name on a launch template", "InvalidParameterValue", ec2.DescribeImageReferencesInput{ImageIds: []string{img},
			ResourceTypes: []types.ResourceTypeRequest{{ResourceType: types.ImageReferenceResourceTypeEc2LaunchTemplate,
				ResourceTypeOptions: []types.ResourceTypeOption{{OptionName: types.ImageReferenceOptionNameStateName, OptionValues: []string{"running"}}}}}}},
		{"version-depth out of range", "InvalidParameterValue", ec2.DescribeImageReferencesInput{ImageIds: []string{img},
			ResourceTypes: []types.ResourceTypeRequest{{ResourceType: types.ImageReferenceResourceTypeEc2LaunchTemplate,
				ResourceTypeOptions: []types.ResourceTypeOption{{OptionName: types.ImageReferenceOptionNameVersionDepth, OptionValues: []string{"0"}}}}}}},
		{"MaxResults below 5", "InvalidParameterValue", ec2.DescribeImageReferencesInput{ImageIds: []string{img}, IncludeAllResourceTypes: all, MaxResults: aws.Int32(4)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.DescribeImageReferences(context.Background(), &tc.in); code(err) != tc.code {
				t.Fatalf("error %v, want %s", err, tc.code)
			}
		})
	}
	// DryRun checks the permission and changes nothing.
	_, err := c.DescribeImageReferences(context.Background(), &ec2.DescribeImageReferencesInput{ImageIds: []string{img}, IncludeAllResourceTypes: all, DryRun: aws.Bool(true)})
	if code(err) != "DryRunOperation" {
		t.Fatalf("DryRun: %v", err)
	}
}

// TestDescribeImageReferencesThrottling: a non-mutating action with its own
// bucket of 100 (refill 20/s), outside the mutating count.
func TestDescribeImageReferencesThrottling(t *testing.T) {
	sim, u := start(t, ec2sim.Options{Throttle: true, TimeScale: 1e-9})
	img, _ := sim.AddImage(ec2sim.ImageSpec{Name: "img"})
	c := noRetryClient(u, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	call := func() error {
		_, err := c.DescribeImageReferences(context.Background(), &ec2.DescribeImageReferencesInput{ImageIds: []string{img}, IncludeAllResourceTypes: aws.Bool(true)})
		return err
	}
	for i := range 100 {
		if err := call(); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
	}
	if err := call(); code(err) != "RequestLimitExceeded" {
		t.Fatalf("call 101: %v, want RequestLimitExceeded", err)
	}
	if _, err := c.DescribeImages(context.Background(), &ec2.DescribeImagesInput{Owners: []string{"self"}}); err != nil {
		t.Fatalf("DescribeImages shares the bucket: %v", err)
	}
	sim.Advance(time.Second) // 20 tokens
	for i := range 20 {
		if err := call(); err != nil {
			t.Fatalf("after a second, call %d: %v", i+1, err)
		}
	}
	if calls := sim.Calls(); calls.Mutating() != 0 || calls.Count("DescribeImageReferences") != 120 || calls.Throttled["DescribeImageReferences"] != 1 {
		t.Fatalf("calls %+v", calls)
	}
}
