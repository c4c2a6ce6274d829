output "vpc_id" {
  description = "ID of the cluster's VPC."
  value       = aws_vpc.this.id
}

output "subnet_ids" {
  description = "The three public subnets (one per zone)."
  value       = aws_subnet.public[*].id
}

output "server_instance_ids" {
  description = "EC2 instance IDs of the servers: targets for `aws ssm start-session` port forwarding to 4646 (Nomad) and 8500 (Consul)."
  value       = aws_instance.server[*].id
}

output "server_private_ips" {
  description = "Private addresses of the three servers."
  value       = aws_instance.server[*].private_ip
}

output "client_asg_name" {
  description = "Name of the Nomad clients' autoscaling group."
  value       = aws_autoscaling_group.clients.name
}

output "client_node_class" {
  description = "node_class of the clients, for the rouse module's gateway_node_class."
  value       = var.client_node_class
}

output "gateway_lb_dns_name" {
  description = "Public DNS name of the load balancer in front of the gateways: point *.<domain> here (CNAME or alias)."
  value       = aws_lb.gateway.dns_name
}

output "gateway_lb_zone_id" {
  description = "Route 53 zone ID of the load balancer, for alias records."
  value       = aws_lb.gateway.zone_id
}

output "gateway_port" {
  description = "Port the gateways must serve on each client."
  value       = var.gateway_port
}

output "datacenter" {
  description = "Nomad and Consul datacenter name."
  value       = var.datacenter
}

output "nomad_management_token" {
  description = "Nomad bootstrap (management) token. Use it to apply the rouse module, then keep it in a vault."
  value       = random_uuid.nomad_management_token.result
  sensitive   = true
}

output "consul_management_token" {
  description = "Consul initial management token. Use it to apply the rouse module, then keep it in a vault."
  value       = random_uuid.consul_management_token.result
  sensitive   = true
}
