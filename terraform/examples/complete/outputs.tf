output "gateway_lb_dns_name" {
  description = "Point *.<domain> here (CNAME, or a Route 53 alias with gateway_lb_zone_id)."
  value       = module.cluster.gateway_lb_dns_name
}

output "gateway_lb_zone_id" {
  description = "Route 53 zone ID of the load balancer."
  value       = module.cluster.gateway_lb_zone_id
}

output "service_url_template" {
  description = "Where each rouse service answers."
  value       = module.rouse.service_url_template
}

output "ssm_port_forward" {
  description = "Commands that make the VPC-only Nomad and Consul APIs reachable on localhost for stage 2 and for the rouse CLI."
  value = [
    "aws ssm start-session --region ${var.region} --target ${module.cluster.server_instance_ids[0]} --document-name AWS-StartPortForwardingSession --parameters portNumber=4646,localPortNumber=4646",
    "aws ssm start-session --region ${var.region} --target ${module.cluster.server_instance_ids[0]} --document-name AWS-StartPortForwardingSession --parameters portNumber=8500,localPortNumber=8500",
  ]
}

output "nomad_management_token" {
  description = "Nomad management token (for NOMAD_TOKEN while operating; move it to a vault)."
  value       = module.cluster.nomad_management_token
  sensitive   = true
}

output "consul_management_token" {
  description = "Consul management token (for CONSUL_HTTP_TOKEN while operating; move it to a vault)."
  value       = module.cluster.consul_management_token
  sensitive   = true
}
