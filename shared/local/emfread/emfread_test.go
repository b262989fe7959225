package emfread

import "testing"

func TestDecodeRejectsBrokenDocuments(t *testing.T) {
	for _, bad := range []string{
		`not json`,
		`{"a":1}`,
		`{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"n","Dimensions":[["F"]],"Metrics":[{"Name":"x"}]}]},"x":1}`,
		`{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"n","Dimensions":[[]],"Metrics":[{"Name":"x"}]}]}}`,
		`{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"n","Dimensions":[[]],"Metrics":[{"Name":"x"}]}]},"x":{"Values":[1,2],"Counts":[1],"Min":1,"Max":2,"Count":2,"Sum":3}}`,
	} {
		if _, err := Decode([]byte(bad)); err == nil {
			t.Errorf("Decode(%s) succeeded", bad)
		}
	}
}
