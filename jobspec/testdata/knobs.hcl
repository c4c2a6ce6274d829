# Knative's two other request timeouts and its two scale knobs: each lands in the job meta
# (written only when set) and in the revision config the gateway and the scaler read.
# visibility and tag_header_routing are the route's: they are not in the job at all.
service "knobs" {
  command                = "/usr/local/bin/knobs"
  timeout                = "60s"
  response_start_timeout = "5s"
  idle_timeout           = "30s"
  visibility             = "internal"
  tag_header_routing     = true

  autoscaling {
    min              = 0
    max              = 10
    scale_down_delay = "2m"
    activation_scale = 3
  }
}
