# The smallest useful decision: allow GETs. Measures the Check path around a trivial policy.
package envoy.authz

import rego.v1

default allow := false

allow if input.attributes.request.http.method == "GET"
