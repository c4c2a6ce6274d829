# A Nomad + Consul cluster on AWS for rouse: three servers (both agents in server mode,
# one per zone), an autoscaling group of Nomad clients behind a public network load
# balancer, and security groups that open only the gateway port to the internet.
#
# Agents find each other by EC2 tag (Consul cloud auto-join; Nomad joins through Consul).
# ACLs are on in both from the first boot; the management tokens are generated here and
# returned as sensitive outputs. No SSH: operators use SSM Session Manager (also for port
# forwarding to the Nomad and Consul APIs, which are never public).

data "aws_availability_zones" "available" {
  state = "available"
}

data "aws_region" "current" {}

data "aws_ami" "debian" {
  count       = var.ami_id == "" ? 1 : 0
  most_recent = true
  owners      = ["136693071363"] # Debian's official AWS account

  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }
  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
}

locals {
  azs       = length(var.availability_zones) == 3 ? var.availability_zones : slice(data.aws_availability_zones.available.names, 0, 3)
  ami_id    = var.ami_id != "" ? var.ami_id : data.aws_ami.debian[0].id
  join_tag  = "${var.name}-consul-server"
  tags      = merge(var.tags, { "rouse-cluster" = var.name })
  user_data = { for role in ["server", "client"] : role => templatefile("${path.module}/templates/cloud-init.yaml.tftpl", local.node_config[role]) }

  node_config_common = {
    nomad_version   = var.nomad_version
    consul_version  = var.consul_version
    datacenter      = var.datacenter
    region          = data.aws_region.current.name
    join_tag_key    = "rouse-consul-join"
    join_tag_value  = local.join_tag
    consul_gossip   = random_id.consul_gossip.b64_std
    nomad_gossip    = random_id.nomad_gossip.b64_std
    agent_token     = random_uuid.consul_agent_token.result
    node_class      = var.client_node_class
    consul_mgmt     = ""
    nomad_bootstrap = ""
    # Only clients run revisions, so only they get the guard's binary and raw_exec.
    rouse_binary_url    = ""
    rouse_binary_sha256 = ""
  }
  node_config = {
    # Both bootstrap secrets go to the servers only; every server may try the one-time
    # bootstrap, the first wins and the rest see "already done".
    server = merge(local.node_config_common, {
      role            = "server"
      consul_mgmt     = random_uuid.consul_management_token.result
      nomad_bootstrap = random_uuid.nomad_management_token.result
    })
    client = merge(local.node_config_common, {
      role                = "client"
      rouse_binary_url    = var.rouse_binary_url
      rouse_binary_sha256 = var.rouse_binary_sha256
    })
  }
}

# --- Secrets generated once, kept in state ---------------------------------------------

resource "random_id" "consul_gossip" {
  byte_length = 32
}

resource "random_id" "nomad_gossip" {
  byte_length = 32
}

resource "random_uuid" "consul_management_token" {}

resource "random_uuid" "nomad_management_token" {}

# The one Consul token the hosts hold: Consul agents and Nomad agents use it to register
# nodes and services. rouse's own daemons get narrower tokens from the rouse module.
resource "random_uuid" "consul_agent_token" {}

# --- Network ---------------------------------------------------------------------------

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = var.name })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = var.name })
}

# Public subnets keep the example free of NAT gateways: nodes get public addresses for
# outbound package downloads, and the security groups admit nothing from outside but
# the gateway port.
resource "aws_subnet" "public" {
  count                   = 3
  vpc_id                  = aws_vpc.this.id
  availability_zone       = local.azs[count.index]
  cidr_block              = cidrsubnet(var.vpc_cidr, 2, count.index)
  map_public_ip_on_launch = true
  tags                    = merge(local.tags, { Name = "${var.name}-${local.azs[count.index]}" })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = var.name })

  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.this.id
  }
}

resource "aws_route_table_association" "public" {
  count          = 3
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

# --- Security groups: only the gateway port is public ---------------------------------

resource "aws_security_group" "servers" {
  name        = "${var.name}-servers"
  description = "Nomad and Consul servers: reachable from inside the VPC only"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${var.name}-servers" })
}

resource "aws_security_group" "clients" {
  name        = "${var.name}-clients"
  description = "Nomad clients: the rouse gateway port is public, everything else VPC-only"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${var.name}-clients" })
}

# Nomad (4646-4648), Consul (8300-8302, 8500, 8600) and the dynamic ports of Nomad
# allocations all stay inside the VPC.
resource "aws_vpc_security_group_ingress_rule" "inside_vpc" {
  for_each          = { servers = aws_security_group.servers.id, clients = aws_security_group.clients.id }
  security_group_id = each.value
  description       = "Any traffic from inside the VPC"
  ip_protocol       = "-1"
  cidr_ipv4         = var.vpc_cidr
}

resource "aws_vpc_security_group_ingress_rule" "gateway" {
  for_each          = toset(var.ingress_cidrs)
  security_group_id = aws_security_group.clients.id
  description       = "Public HTTP to the rouse gateway"
  ip_protocol       = "tcp"
  from_port         = var.gateway_port
  to_port           = var.gateway_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "all" {
  for_each          = { servers = aws_security_group.servers.id, clients = aws_security_group.clients.id }
  security_group_id = each.value
  description       = "Package downloads, image pulls, AWS APIs"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

# --- IAM: cloud auto-join and SSM, nothing else ----------------------------------------

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "auto_join" {
  statement {
    actions   = ["ec2:DescribeInstances"]
    resources = ["*"] # Describe* calls cannot be scoped to resources
  }
}

resource "aws_iam_role" "node" {
  name               = "${var.name}-node"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
  tags               = local.tags
}

resource "aws_iam_role_policy" "auto_join" {
  name   = "consul-auto-join"
  role   = aws_iam_role.node.id
  policy = data.aws_iam_policy_document.auto_join.json
}

resource "aws_iam_role_policy_attachment" "ssm" {
  role       = aws_iam_role.node.name
  policy_arn = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "node" {
  name = "${var.name}-node"
  role = aws_iam_role.node.name
}

# --- Servers ---------------------------------------------------------------------------

resource "aws_instance" "server" {
  count                  = 3
  ami                    = local.ami_id
  instance_type          = var.server_instance_type
  subnet_id              = aws_subnet.public[count.index].id
  vpc_security_group_ids = [aws_security_group.servers.id]
  iam_instance_profile   = aws_iam_instance_profile.node.name
  user_data              = local.user_data["server"]

  # IMDSv2 only: user data holds bootstrap secrets, so no unauthenticated metadata reads.
  metadata_options {
    http_tokens   = "required"
    http_endpoint = "enabled"
  }

  root_block_device {
    volume_size = 20
    volume_type = "gp3"
    encrypted   = true
  }

  tags = merge(local.tags, {
    Name                = "${var.name}-server-${count.index}"
    "rouse-consul-join" = local.join_tag
  })

  lifecycle {
    # A new AMI must not replace all three servers at once; roll them by hand.
    ignore_changes = [ami, user_data]
  }
}

# --- Clients ---------------------------------------------------------------------------

resource "aws_launch_template" "client" {
  name_prefix            = "${var.name}-client-"
  image_id               = local.ami_id
  instance_type          = var.client_instance_type
  vpc_security_group_ids = [aws_security_group.clients.id]
  user_data              = base64encode(local.user_data["client"])

  iam_instance_profile {
    name = aws_iam_instance_profile.node.name
  }

  metadata_options {
    http_tokens   = "required"
    http_endpoint = "enabled"
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size = 40
      volume_type = "gp3"
      encrypted   = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${var.name}-client" })
  }

  tags = local.tags
}

resource "aws_autoscaling_group" "clients" {
  name                = "${var.name}-clients"
  min_size            = var.client_min_size
  max_size            = var.client_max_size
  desired_capacity    = var.client_desired_capacity
  vpc_zone_identifier = aws_subnet.public[*].id
  target_group_arns   = [aws_lb_target_group.gateway.arn]
  # EC2, not ELB: the gateway arrives later (rouse module), and an ELB health check would
  # recycle every client before it does.
  health_check_type = "EC2"

  launch_template {
    id      = aws_launch_template.client.id
    version = aws_launch_template.client.latest_version
  }

  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 66
    }
  }

  dynamic "tag" {
    for_each = local.tags
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}

# --- Public entry: a network load balancer to the gateways ----------------------------

resource "aws_lb" "gateway" {
  name               = "${var.name}-gateway"
  load_balancer_type = "network"
  internal           = false
  subnets            = aws_subnet.public[*].id
  tags               = local.tags
}

resource "aws_lb_target_group" "gateway" {
  name     = "${var.name}-gateway"
  port     = var.gateway_port
  protocol = "TCP"
  vpc_id   = aws_vpc.this.id
  # Draining longer than the gateway's own shutdown so in-flight requests finish.
  deregistration_delay = 30

  health_check {
    protocol            = "TCP"
    port                = "traffic-port"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = local.tags
}

resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.gateway.arn
  port              = 80
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.gateway.arn
  }
}
