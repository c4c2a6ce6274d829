output "gateway_job_id" {
  description = "Nomad job ID of the gateway."
  value       = nomad_job.gateway.id
}

output "scaler_job_id" {
  description = "Nomad job ID of the scaler."
  value       = nomad_job.scaler.id
}

output "gateway_address" {
  description = "The gateways' public HTTP endpoint as Consul DNS (every healthy gateway), host:port."
  value       = "${var.gateway_job_name}-http.service.consul:${var.gateway_public_port}"
}

output "gateway_port" {
  description = "Static host port of public HTTP on every gateway node; target it from the load balancer."
  value       = var.gateway_public_port
}

output "service_url_template" {
  description = "Where a rouse service answers once *.<domain> resolves to the gateways."
  value       = "http://<service>.<namespace>.${var.domain}"
}

output "gateway_consul_token_accessor_id" {
  description = "Accessor ID of the gateway's Consul token (null without Consul ACLs)."
  value       = var.consul_acl_enabled ? consul_acl_token.gateway[0].accessor_id : null
}

output "scaler_consul_token_accessor_id" {
  description = "Accessor ID of the scaler's Consul token (null without Consul ACLs)."
  value       = var.consul_acl_enabled ? consul_acl_token.scaler[0].accessor_id : null
}

output "scaler_nomad_policy" {
  description = "Name of the Nomad ACL policy attached to the scaler job's workload identity (null without Nomad ACLs)."
  value       = var.nomad_acl_enabled ? nomad_acl_policy.scaler[0].name : null
}
