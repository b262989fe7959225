package stack

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
)

// addStackSuppressions holds the cdk-nag suppressions that cannot be attached to one of our own
// constructs (resources CDK generates). Each names its rule, what it applies to, and why.
func addStackSuppressions(stack awscdk.Stack) {}
